"""Classify image files with a checkpoint written by examples/train.py: top-k classes each.

    python examples/train.py --epochs 5 --checkpoint run.ckpt
    python examples/predict.py shoe.png shirt.jpg --checkpoint run.ckpt --top-k 3

Prints, for each image, its path and then its ``--top-k`` most probable classes with
their softmax probabilities::

    shoe.png
      1. Ankle boot   0.9731
      2. Sneaker      0.0201
      3. Sandal       0.0050

Each image is read as examples/train.py's data was (:func:`xcnn.data.read_images`,
the decoding of :class:`xcnn.data.ImageFolder`): converted to the model's channels
(grey or RGB), resized to its input size (bilinear), scaled to [0, 1] and normalised
as in training. Everything needed comes from the checkpoint's metadata, which
examples/train.py writes (``xcnn.fit(..., checkpoint_meta=...)``):

* ``classes``: the class names, label ``i`` is ``classes[i]``;
* ``model_name`` and ``model_args``: ``xcnn.models.<model_name>(**model_args)``;
* ``input_shape``: ``[C, H, W]``;
* ``normalize``: ``{"mean": [...], "std": [...]}`` per channel, or ``null``.

Needs Pillow (``pip install 'xcnn[images]'``). ``--json FILE`` also writes every
image's top-k classes and probabilities at full precision.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

import xcnn
from xcnn import backends, data, models
from xcnn._atomic import atomic_write
from xcnn.io import read_metadata
from xcnn.nn import functional as F

#: What a checkpoint's metadata must hold for predict, and what each entry is.
NEEDED = {
    "classes": "the class names",
    "model_name": "the xcnn.models builder",
    "model_args": "its arguments",
    "input_shape": "[C, H, W]",
    "normalize": "the normalisation, or null",
}
HOW_TO_GET_ONE = (
    "examples/train.py writes them: python examples/train.py --checkpoint PATH; from "
    "your own code, pass xcnn.fit(..., checkpoint_meta={...}) or xcnn.save(path, model, "
    "classes=..., model_name=..., model_args=..., input_shape=..., normalize=...)"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Print the most probable classes of each image under a trained model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="written by examples/train.py --checkpoint"
    )
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--backend",
        choices=backends.NAMES,
        default=None,
        help="array backend (default: $XCNN_BACKEND, else numpy)",
    )
    args = parser.parse_args(argv)
    for name in ("top_k", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}"
            )
    missing = [str(path) for path in args.images if not path.is_file()]
    if missing:
        parser.error(f"no such image file: {', '.join(missing)}")
    return args


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """The entries of :data:`NEEDED` from ``path``'s metadata, checked."""
    meta = read_metadata(path)
    where = f"checkpoint {str(path)!r}"
    absent = [name for name in NEEDED if name not in meta]
    if absent:
        wanted = ", ".join(f"{name!r} ({NEEDED[name]})" for name in absent)
        raise ValueError(
            f"{where} lacks what predict needs in its metadata: {wanted}. " + HOW_TO_GET_ONE
        )
    classes, name, kwargs = meta["classes"], meta["model_name"], meta["model_args"]
    shape, normalize = meta["input_shape"], meta["normalize"]
    builders = [n for n in models.__all__ if callable(getattr(models, n))]
    problems = []
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        problems.append(f"'classes' should be a non-empty list of names, got {classes!r}")
    if name not in builders:
        problems.append(f"'model_name' {name!r} is not one of xcnn.models' {builders}")
    if not isinstance(kwargs, dict):
        problems.append(f"'model_args' should be an object of arguments, got {kwargs!r}")
    if not (
        isinstance(shape, list)
        and len(shape) == 3
        and all(isinstance(n, int) and n >= 1 for n in shape)
        and shape[0] in (1, 3)
    ):
        problems.append(f"'input_shape' should be [C, H, W] with C 1 or 3, got {shape!r}")
    if normalize is not None and not (
        isinstance(normalize, dict) and set(normalize) == {"mean", "std"}
    ):
        problems.append(
            f"'normalize' should be null or {{'mean': [...], 'std': [...]}}, got {normalize!r}"
        )
    if problems:
        raise ValueError(f"{where} has unusable metadata: " + "; ".join(problems))
    return {key: meta[key] for key in NEEDED}


def load_model(path: Path, meta: dict[str, Any]) -> Any:
    """``xcnn.models.<model_name>(**model_args)`` with the checkpoint's weights, in eval mode."""
    model = getattr(models, meta["model_name"])(**meta["model_args"])
    xcnn.load(path, model, restore_rng=False)
    return model.eval()


def predict(model: Any, images: np.ndarray, meta: dict[str, Any], batch_size: int) -> np.ndarray:
    """Softmax probabilities ``(N, classes)`` of uint8 ``images`` ``(N, C, H, W)``.

    Batches go through the DataLoader, as in training and :func:`xcnn.evaluate`:
    the same scaling to [0, 1], then the checkpoint's normalisation.
    """
    normalize = meta["normalize"]
    transform = None
    if normalize is not None:
        transform = data.transforms.Normalize(normalize["mean"], normalize["std"])
    labels = np.zeros(len(images), dtype=np.int64)  # unused; the loader yields pairs
    dataset = data.ArrayDataset(images, labels, meta["classes"], "images")
    backend = backends.current()
    probabilities = []
    with xcnn.no_grad():
        for x, _ in data.DataLoader(dataset, batch_size, transform=transform):
            probabilities.append(backend.to_numpy(F.softmax(model(xcnn.Tensor(x)), dim=1).data))
    return np.concatenate(probabilities)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.backend:
        backends.use(args.backend)
    meta = read_checkpoint_meta(args.checkpoint)
    classes = meta["classes"]
    if args.top_k > len(classes):
        raise ValueError(f"--top-k {args.top_k} exceeds the model's {len(classes)} classes")
    model = load_model(args.checkpoint, meta)
    channels, height, width = meta["input_shape"]
    images = data.read_images(args.images, size=(height, width), grayscale=channels == 1)
    probabilities = predict(model, images, meta, args.batch_size)

    results = []
    column = max(len(name) for name in classes)
    for path, row in zip(args.images, probabilities, strict=True):
        # Stable: equal probabilities keep class order.
        top = np.argsort(-row, kind="stable")[: args.top_k]
        print(path)
        for rank, index in enumerate(top, start=1):
            print(f"  {rank}. {classes[index]:<{column}}  {row[index]:.4f}")
        results.append(
            {
                "image": str(path),
                "classes": [classes[i] for i in top],
                "probabilities": [float(row[i]) for i in top],
            }
        )
    if args.json is not None:
        text = json.dumps(results, indent=2) + "\n"
        atomic_write(args.json, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, RuntimeError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
