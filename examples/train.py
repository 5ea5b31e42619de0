"""Train a CNN on MNIST, Fashion-MNIST or CIFAR-10 with xcnn, on NumPy or CuPy.

    python examples/train.py                        # LeNet-5 on Fashion-MNIST (or the
                                                    # bundled sample when offline)
    XCNN_BACKEND=cupy python examples/train.py      # the same on a CUDA GPU
    python examples/train.py --model simple_cnn --dataset fashion-mnist \\
        --data-dir /usr/share/datasets/fashion-mnist --epochs 10 --optimizer adam
    mpiexec -n 2 python examples/train.py --distributed   # data-parallel on 2 ranks
    python examples/train.py --dataset folder --data-dir my_images   # your own images
    python examples/train.py --dataset sample --report report/   # PNGs of data and network

``--dataset folder`` reads class sub-folders of images (:class:`xcnn.data.ImageFolder`):
``DIR/train`` and ``DIR/test`` (or ``DIR/val``) when both exist, else all of ``DIR``
with a seeded 10% held out for testing.

Prints a progress bar and a line per epoch, and ends with ``test accuracy: 0.xxxx``.
With ``--distributed`` every rank trains a replica on its shard of each batch
(``--batch-size`` images per rank) and rank 0 alone prints, plots and checkpoints.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import xcnn
from xcnn import backends, data, models, nn, optim

MODELS = {
    "lenet5": models.lenet5,
    "simple_cnn": models.simple_cnn,
    "resnet20": models.resnet20,
    "se_resnet20": models.se_resnet20,
    "resnet18": models.resnet18,
}
# Builders that take the image size (the others adapt with global average pooling).
SIZED = {"lenet5", "simple_cnn"}
DATASETS = ("fashion-mnist", "mnist", "cifar10", "sample", "folder")
OPTIMIZERS = ("adam", "sgd", "adamw")

# Per-channel statistics of the training sets, for the Normalize transform.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# Fraction of a --dataset folder held out for testing when it has no train/test split.
HELD_OUT = 0.1


def number(kind: type, valid, expected: str):
    """An argparse type: parse ``text`` as ``kind`` and check ``valid(value)``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


positive_int = number(int, lambda v: v >= 1, "a positive integer")
non_negative_int = number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = number(float, lambda v: 0 < v < float("inf"), "a positive finite number")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train a CNN with xcnn and print its test accuracy.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", choices=sorted(MODELS), default="lenet5")
    parser.add_argument("--dataset", choices=DATASETS, default="fashion-mnist")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="directory holding the dataset files (default: $XCNN_DATA or ~/.cache/xcnn); "
        "for --dataset folder, class sub-folders of images, or train/ and test/ (or val/) "
        "holding them",
    )
    parser.add_argument("--epochs", type=positive_int, default=5)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--lr", type=positive_float, default=None, help="default: per optimizer")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--checkpoint", type=Path, default=None, help="save here every epoch")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--plot", type=Path, default=None, help="write loss/accuracy PNG here")
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="DIR",
        help="after training, write PNGs of samples, filters, feature maps, confusion "
        "matrix, worst errors and history into DIR",
    )
    parser.add_argument(
        "--export-onnx",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the trained model here as ONNX (needs pip install 'xcnn[onnx]')",
    )
    parser.add_argument(
        "--summary", action="store_true", help="print the model's layers, shapes and sizes first"
    )
    parser.add_argument(
        "--backend",
        choices=backends.NAMES,
        default=None,
        help="array backend (default: $XCNN_BACKEND, else numpy)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    mixing = parser.add_mutually_exclusive_group()
    mixing.add_argument(
        "--mixup", type=positive_float, default=None, metavar="ALPHA", help="MixUp(alpha=ALPHA)"
    )
    mixing.add_argument(
        "--cutmix", type=positive_float, default=None, metavar="ALPHA", help="CutMix(alpha=ALPHA)"
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over the ranks of mpiexec -n N (a world of one without it); "
        "--batch-size is per rank",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads per process (default: xcnn's; with --distributed, the host's "
        "CPUs shared between its ranks)",
    )
    args = parser.parse_args(argv)
    if args.resume and args.checkpoint is None:
        parser.error("--resume needs --checkpoint PATH")
    if args.data_dir is not None and not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} does not exist or is not a directory")
    if args.dataset == "folder" and args.data_dir is None:
        parser.error("--dataset folder needs --data-dir DIR (class sub-folders of images)")
    return args


def build_optimizer(name: str, params, lr: float | None) -> optim.Optimizer:
    if name == "sgd":
        return optim.SGD(params, lr=lr or 0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    if name == "adamw":
        return optim.AdamW(params, lr=lr or 1e-3)
    return optim.Adam(params, lr=lr or 1e-3)


def load_folder(root: Path, seed: int, say) -> tuple[data.ArrayDataset, data.ArrayDataset]:
    """Train and test sets from ``root/train`` and ``root/test`` (or ``root/val``), else a split.

    The test images take the training images' size and channels; the split
    holds out ``HELD_OUT`` of the images, chosen by ``seed``.
    """
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        train_set = data.ImageFolder(root / "train")
        shape = train_set.images.shape
        test_set = data.ImageFolder(test_dir, size=shape[2:], grayscale=shape[1] == 1)
        if test_set.classes != train_set.classes:
            raise ValueError(
                f"{test_dir} has classes {test_set.classes} but {root / 'train'} has "
                f"{train_set.classes}; both need the same class folders"
            )
        return train_set, test_set
    full = data.ImageFolder(root)
    n = len(full)
    held = max(1, math.ceil(HELD_OUT * n))
    if n - held < 1:
        raise ValueError(f"{root} holds {n} image(s); a held-out split needs at least 2")
    order = np.random.default_rng(seed).permutation(n)
    test_idx, train_idx = np.sort(order[:held]), np.sort(order[held:])

    def subset(indices, split):
        name = f"{root.name} ({split})"
        return data.ArrayDataset(full.images[indices], full.labels[indices], full.classes, name)

    say(
        f"no train/ and test/ folders in {root}: held out {held} of {n} images for testing "
        f"(seed {seed}), training on {n - held}"
    )
    return subset(train_idx, "train"), subset(test_idx, "held-out test")


def load_data(
    dataset: str, data_dir: Path | None, seed: int, say
) -> tuple[data.ArrayDataset, data.ArrayDataset]:
    """Train and test sets of ``dataset``; offline, the bundled sample for both (said once)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", data.SampleFallbackWarning)
        if dataset == "folder":
            train_set, test_set = load_folder(data_dir, seed, say)
        else:
            train_set = data.load_dataset(dataset, root=data_dir, train=True)
            if isinstance(train_set, data.FashionMNISTSample):  # fell back: test on it too
                test_set = data.FashionMNISTSample(train=False)
            else:
                test_set = data.load_dataset(dataset, root=data_dir, train=False)
    for notice in caught:
        say(f"notice: {notice.message}", file=sys.stderr)
    return train_set, test_set


def make_transforms(dataset: str, channels: int, seed: int) -> tuple:
    """``(train transform, eval transform)`` for the data actually loaded (each may be None).

    Offline, cifar10 falls back to the 1x28x28 sample, which gets none.
    """
    if not (dataset == "cifar10" and channels == 3):
        return None, None
    transform = data.transforms.Compose(
        [
            data.transforms.RandomCrop(32, padding=4, rng=seed + 1),
            data.transforms.RandomHorizontalFlip(rng=seed + 2),
            data.transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        ]
    )
    return transform, data.transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)


def model_kwargs(model: str, train_set: data.ArrayDataset) -> dict:
    """The builder's arguments that ``train_set`` decides (all but ``rng``)."""
    channels, height, width = train_set.images.shape[1:]
    kwargs = {"in_channels": int(channels), "num_classes": train_set.num_classes}
    if model in SIZED:
        if width != height:
            raise ValueError(
                f"{model} takes square images, got {height}x{width} "
                "(HxW); resize them or choose --model resnet20"
            )
        kwargs["input_size"] = int(height)
    return kwargs


def checkpoint_meta(model: str, kwargs: dict, train_set: data.ArrayDataset, normalize) -> dict:
    """What examples/predict.py reads from a checkpoint to rebuild and feed the model.

    ``classes`` (label i is ``classes[i]``), ``model_name`` (a builder in ``xcnn.models``),
    ``model_args`` (its arguments but ``rng``), ``input_shape`` ``[C, H, W]``, and
    ``normalize``: ``{"mean": [...], "std": [...]}`` applied after scaling to [0, 1],
    or ``None``.
    """
    return {
        "classes": list(train_set.classes),
        "model_name": model,
        "model_args": dict(kwargs),
        "input_shape": [int(n) for n in train_set.images.shape[1:]],
        "normalize": None
        if normalize is None
        else {"mean": list(normalize.mean), "std": list(normalize.std)},
    }


def quiet(*args, **kwargs) -> None:
    """``print`` for the ranks that do not print."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backend = backends.use(args.backend).backend if args.backend else backends.current()
    ranks, is_main = 1, True
    if args.distributed:
        from xcnn import distributed

        distributed.init()  # from here on, loaders shard and fit reduces over the ranks
        ranks, is_main = distributed.world_size(), distributed.is_main()
    say = print if is_main else quiet
    if args.threads is not None:
        xcnn.set_num_threads(args.threads)
    xcnn.manual_seed(args.seed)

    train_set, test_set = load_data(args.dataset, args.data_dir, args.seed, say)
    channels, height = train_set.images.shape[1], train_set.images.shape[2]
    transform, eval_transform = make_transforms(args.dataset, channels, args.seed)
    # MixUp / CutMix mix images and labels: the loader then yields class probabilities.
    mix, classes = None, train_set.num_classes
    if args.mixup is not None:
        mix = data.transforms.MixUp(alpha=args.mixup, num_classes=classes, rng=args.seed + 3)
    elif args.cutmix is not None:
        mix = data.transforms.CutMix(alpha=args.cutmix, num_classes=classes, rng=args.seed + 3)
    train_loader = data.DataLoader(
        train_set,
        args.batch_size,
        shuffle=True,
        seed=args.seed,
        transform=transform,
        batch_transform=mix,
    )
    # Unpadded shards: each test image is counted once, so the accuracy is exact.
    test_loader = data.DataLoader(test_set, 1000, transform=eval_transform, even_shards=False)

    kwargs = model_kwargs(args.model, train_set)
    model = MODELS[args.model](rng=args.seed, **kwargs)
    if args.summary and is_main:
        xcnn.summary(model, (channels, height, train_set.images.shape[3]))
    if args.distributed:
        # Rank 0's weights go to every rank; ranks started with other settings are refused.
        model = distributed.DistributedDataParallel(model, hyperparameters=settings(args))
    optimizer = build_optimizer(args.optimizer, model.parameters(), args.lr)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    loss_fn = nn.CrossEntropyLoss()

    batch = f"batch {args.batch_size}"
    if args.distributed:
        threads = xcnn.get_num_threads()
        batch += f" x {ranks} rank{'s' * (ranks > 1)} ({threads} thread{'s' * (threads > 1)} each)"
    say(
        f"xcnn {xcnn.__version__} | backend {backend.name} | {args.model} on {train_set.name} "
        f"({len(train_set)} train, {len(test_set)} test) | {args.optimizer} | "
        f"{batch} | {args.epochs} epochs",
        flush=True,
    )
    start = time.perf_counter()
    history = xcnn.fit(
        model,
        loss_fn,
        optimizer,
        train_loader,
        args.epochs,
        val_loader=test_loader,
        scheduler=scheduler,
        checkpoint=args.checkpoint,
        checkpoint_meta=checkpoint_meta(args.model, kwargs, train_set, eval_transform),
        resume=args.resume,
        progress=not args.no_progress,
        verbose=True,  # the per-epoch line is printed even without the progress bar
    )
    if args.plot is not None and is_main:
        xcnn.plot_history(history, args.plot)
        say(f"plot written to {args.plot}")
    if args.report is not None and is_main:
        for path in xcnn.plot.report(
            model, train_set, test_set, history, args.report, transform=eval_transform
        ).values():
            say(f"report written to {path}")
    result = xcnn.evaluate(model, test_loader)
    say(f"trained in {time.perf_counter() - start:.1f} s")
    if args.export_onnx is not None and is_main:
        # Traced on two test images; the file runs at any batch size.
        images, _ = next(iter(test_loader))
        xcnn.onnx.export(getattr(model, "module", model), images[:2, ...], args.export_onnx)
        say(f"ONNX model written to {args.export_onnx}")
    say(f"test accuracy: {result['accuracy']:.4f}")
    return 0


def settings(args: argparse.Namespace) -> dict:
    """The options that every rank must share (paths and display may differ)."""
    names = ("model", "dataset", "epochs", "batch_size", "lr", "optimizer", "seed", "backend")
    names += ("mixup", "cutmix")
    return {name: getattr(args, name) for name in names}


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, RuntimeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
