"""Train one model under several recipes and draw their loss and accuracy curves on one chart.

    python examples/compare.py --vary optimizer=sgd,momentum,adam --epochs 5 --out runs/opt
    python examples/compare.py --vary activation=relu,sigmoid,tanh --vary batch_norm=off,on
    python examples/compare.py --vary optimizer=adam --out runs/adam    # one recipe alone

Each ``--vary KEY=V1,V2,...`` lists the values of one setting; several ``--vary``
form their cross product (``--vary optimizer=sgd,adam --vary lr=0.1,0.01`` is four
recipes), and a single value just fixes a setting. The keys, their values and the
default of the settings that are not varied:

================  ====================================================  ===========
key               values                                                default
================  ====================================================  ===========
``optimizer``     ``sgd``, ``momentum`` (0.9), ``adam``, ``adamw``      ``adam``
``activation``    ``relu``, ``leaky_relu``, ``sigmoid``, ``tanh``       ``relu``
``init``          ``default`` (PyTorch's), ``kaiming`` (He normal),     ``default``
                  ``xavier`` (Glorot uniform), ``normal<std>``
                  (e.g. ``normal0.01``); biases start at zero
``batch_norm``    ``off``, ``on``                                       ``off``
``scheduler``     ``none``, ``cosine`` (to zero over the epochs)        ``none``
``lr``            a positive number                                     per optimizer
``batch_size``    a positive integer                                    64
================  ====================================================  ===========

The learning rate defaults to 0.1 for ``sgd``, 0.01 for ``momentum`` (the same
step size once the momentum has built up) and 0.001 for ``adam``/``adamw``.
``activation`` and ``batch_norm`` need a model that takes them (``lenet5``,
the default, or ``simple_cnn``).

Data, transforms and model arguments come from examples/train.py. Every recipe
starts from the same seeded state, whatever ran before it: xcnn's default
generator, the model's weights and dropout masks, the init and the loader's
shuffling are all seeded afresh from ``--seed``. A recipe run alone therefore
gives the same numbers, bit for bit, as the same recipe inside a comparison.

Writes to ``--out``: ``compare.png`` (loss and accuracy per epoch, every recipe
in its own colour, train solid and test dashed), ``results.md`` (the table of
final test accuracy, final losses and wall time per recipe, also printed) and
``results.json`` (each recipe's settings and full history).
"""

from __future__ import annotations

import argparse
import inspect
import io
import itertools
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from train import (
    DATASETS,
    MODELS,
    load_data,
    make_transforms,
    model_kwargs,
    non_negative_int,
    positive_int,
)

import xcnn
from xcnn import backends, data, models, nn, optim
from xcnn._atomic import atomic_write

#: Learning rate of each optimizer when ``lr`` is not given.
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.01, "adam": 1e-3, "adamw": 1e-3}
CHOICES = {
    "optimizer": tuple(DEFAULT_LR),
    "activation": tuple(models.ACTIVATIONS),
    "init": ("default", "kaiming", "xavier", "normal<std> (e.g. normal0.01)"),
    "batch_norm": ("off", "on"),
    "scheduler": ("none", "cosine"),
    "lr": ("a positive number",),
    "batch_size": ("a positive integer",),
}
DEFAULTS = {
    "optimizer": "adam",
    "activation": "relu",
    "init": "default",
    "batch_norm": "off",
    "scheduler": "none",
    "lr": None,
    "batch_size": 64,
}
#: Keys that only models built with these arguments accept.
MODEL_OPTIONS = ("activation", "batch_norm")


def parse_value(key: str, text: str) -> Any:
    """``text`` as a value of ``key``; ValueError listing the valid ones otherwise."""
    value: Any = text
    if key == "lr":
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = 0 < value < math.inf
    elif key == "batch_size":
        ok = text.isdigit() and int(text) >= 1
        value = int(text) if ok else text
    elif key == "init" and text.startswith("normal"):
        try:
            std = float(text.removeprefix("normal"))
        except ValueError:
            std = math.nan
        ok = 0 < std < math.inf
    else:
        ok = text in CHOICES[key]
    if not ok:
        raise ValueError(
            f"--vary {key}: {text!r} is not a valid value; valid: {', '.join(CHOICES[key])}"
        )
    return value


def parse_vary(items: list[str]) -> dict[str, list[tuple[str, Any]]]:
    """``["optimizer=sgd,adam", ...]`` -> ``{"optimizer": [("sgd", "sgd"), ...]}`` (text, value)."""
    varied: dict[str, list[tuple[str, Any]]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not values.strip():
            raise ValueError(f"--vary takes KEY=V1,V2,..., got {item!r}")
        if key not in CHOICES:
            raise ValueError(f"--vary: unknown key {key!r}; valid keys: {', '.join(CHOICES)}")
        if key in varied:
            raise ValueError(f"--vary {key} is given twice; list all its values in one --vary")
        texts = [text.strip() for text in values.split(",")]
        repeated = sorted({text for text in texts if texts.count(text) > 1})
        if repeated:
            raise ValueError(f"--vary {key}: {', '.join(repeated)} listed more than once")
        varied[key] = [(text, parse_value(key, text)) for text in texts]
    return varied


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train one model under several recipes; chart and tabulate them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help=f"values of one setting (repeatable: the cross product); keys: {', '.join(CHOICES)}",
    )
    parser.add_argument("--model", choices=sorted(MODELS), default="lenet5")
    parser.add_argument("--dataset", choices=DATASETS, default="sample")
    parser.add_argument("--data-dir", type=Path, default=None, help="as for examples/train.py")
    parser.add_argument("--epochs", type=positive_int, default=5)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--out", type=Path, default=Path("compare"), help="output folder")
    parser.add_argument(
        "--train-subset", type=positive_int, default=None, help="train on N images (seeded)"
    )
    parser.add_argument(
        "--test-subset", type=positive_int, default=None, help="test on N images (seeded)"
    )
    parser.add_argument(
        "--backend",
        choices=backends.NAMES,
        default=None,
        help="array backend (default: $XCNN_BACKEND, else numpy)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        args.varied = parse_vary(args.vary)
    except ValueError as error:
        parser.error(str(error))
    builder = inspect.signature(MODELS[args.model]).parameters
    for key in MODEL_OPTIONS:
        if key in args.varied and key not in builder:
            takers = [
                name for name in sorted(MODELS) if key in inspect.signature(MODELS[name]).parameters
            ]
            parser.error(
                f"--vary {key} needs a model that takes it ({', '.join(takers)}), "
                f"not --model {args.model}"
            )
    if args.data_dir is not None and not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} does not exist or is not a directory")
    if args.dataset == "folder" and args.data_dir is None:
        parser.error("--dataset folder needs --data-dir DIR (class sub-folders of images)")
    return args


@dataclass
class Recipe:
    """One point of the cross product: its label and every setting (defaults filled in)."""

    label: str
    settings: dict[str, Any]


def recipes(varied: dict[str, list[tuple[str, Any]]]) -> list[Recipe]:
    """The cross product, in command-line order; labels name the keys with several values."""
    shown = [key for key, values in varied.items() if len(values) > 1] or list(varied)
    found = []
    for combination in itertools.product(*varied.values()):
        chosen = dict(zip(varied, combination, strict=True))
        label = " ".join(f"{key}={chosen[key][0]}" for key in shown) or "defaults"
        settings = DEFAULTS | {key: value for key, (_, value) in chosen.items()}
        if settings["lr"] is None:
            settings["lr"] = DEFAULT_LR[settings["optimizer"]]
        found.append(Recipe(label, settings))
    return found


def subset(dataset: data.ArrayDataset, size: int | None, seed: int) -> data.ArrayDataset:
    """``size`` images of ``dataset`` chosen by ``seed`` (kept in dataset order), or all."""
    if size is None or size >= len(dataset):
        return dataset
    keep = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:size])
    return data.ArrayDataset(
        dataset.images[keep], dataset.labels[keep], dataset.classes, dataset.name
    )


def initialise(model: nn.Module, scheme: str, seed: int) -> None:
    """Redraw every convolution and linear weight by ``scheme``, biases to zero."""
    if scheme == "default":
        return
    # A stream of its own, so the init does not shift the builder's or the loader's draws.
    rng = np.random.default_rng([seed, 1])
    for module in model.modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        if scheme == "kaiming":
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu", rng=rng)
        elif scheme == "xavier":
            nn.init.xavier_uniform_(module.weight, rng=rng)
        else:
            nn.init.normal_(module.weight, 0.0, float(scheme.removeprefix("normal")), rng=rng)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build_optimizer(name: str, params: Any, lr: float) -> optim.Optimizer:
    if name == "sgd":
        return optim.SGD(params, lr=lr)
    if name == "momentum":
        return optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adamw":
        return optim.AdamW(params, lr=lr)
    return optim.Adam(params, lr=lr)


@dataclass
class Result:
    recipe: Recipe
    history: xcnn.History
    seconds: float
    diverged: int | None  # the epoch in which the loss became NaN/inf, if it did


def run(recipe: Recipe, train_set, test_set, args: argparse.Namespace) -> Result:
    """Train from the seeded state that every recipe starts from; nothing carries over."""
    settings, seed = recipe.settings, args.seed
    xcnn.manual_seed(seed)
    transform, eval_transform = make_transforms(args.dataset, train_set.images.shape[1], seed)
    kwargs = model_kwargs(args.model, train_set)
    if "activation" in inspect.signature(MODELS[args.model]).parameters:
        kwargs |= {
            "activation": settings["activation"],
            "batch_norm": settings["batch_norm"] == "on",
        }
    model = MODELS[args.model](rng=seed, **kwargs)
    initialise(model, settings["init"], seed)
    optimizer = build_optimizer(settings["optimizer"], model.parameters(), settings["lr"])
    scheduler = None
    if settings["scheduler"] == "cosine":
        scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    train_loader = data.DataLoader(
        train_set, settings["batch_size"], shuffle=True, seed=seed, transform=transform
    )
    test_loader = data.DataLoader(test_set, 1000, transform=eval_transform)
    start = time.perf_counter()
    diverged = None
    try:
        history = xcnn.fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            train_loader,
            args.epochs,
            val_loader=test_loader,
            scheduler=scheduler,
            progress=not args.no_progress,
            verbose=True,
        )
    except xcnn.TrainingDiverged as error:
        print(f"  {error}")
        history, diverged = error.history, error.epoch
    return Result(recipe, history, time.perf_counter() - start, diverged)


def table(results: list[Result]) -> str:
    """The markdown table of final test accuracy, final losses and wall time per recipe."""
    lines = [
        "| recipe | test accuracy | test loss | train loss | time (s) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        h = result.history
        if len(h):
            cells = [
                f"{h.val_accuracy[-1]:.4f}",
                f"{h.val_loss[-1]:.4f}",
                f"{h.train_loss[-1]:.4f}",
            ]
        else:
            cells = ["-", "-", "-"]
        if result.diverged is not None:
            cells[2] = f"diverged in epoch {result.diverged}"
        lines.append(f"| {result.recipe.label} | {' | '.join(cells)} | {result.seconds:.1f} |")
    return "\n".join(lines) + "\n"


def plot(results: list[Result], title: str, path: Path) -> Path:
    """Loss and accuracy per epoch of every recipe on one figure (PNG, written atomically)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise ImportError(
            "the comparison chart needs matplotlib, an optional extra: pip install 'xcnn[plot]'"
        ) from None
    figure = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    # Ten distinct colours, else twenty (paired shades), then repeats.
    palette = [f"C{i}" for i in range(10)] if len(results) <= 10 else _tab20()
    colours = [palette[i % len(palette)] for i in range(len(results))]
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for result, colour in zip(results, colours, strict=True):
            h = result.history
            for split, style in (("train", "-"), ("val", "--")):
                values = [math.nan if v is None else v for v in getattr(h, f"{split}_{metric}")]
                ax.plot(h.epochs, values, style, color=colour, marker="o", markersize=3)
        ax.set_title(metric.capitalize())
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    handles = [
        Line2D([], [], color=c, label=r.recipe.label) for r, c in zip(results, colours, strict=True)
    ]
    handles += [
        Line2D([], [], color="grey", linestyle="-", label="train"),
        Line2D([], [], color="grey", linestyle="--", label="test"),
    ]
    axes[1].legend(handles=handles, fontsize="small")
    figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    png = buffer.getvalue()
    return atomic_write(path, lambda tmp: tmp.write_bytes(png))


def _tab20() -> list:
    from matplotlib import colormaps

    return list(colormaps["tab20"].colors)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.backend:
        backends.use(args.backend)
    train_set, test_set = load_data(args.dataset, args.data_dir, args.seed, print)
    train_set = subset(train_set, args.train_subset, args.seed)
    test_set = subset(test_set, args.test_subset, args.seed)
    todo = recipes(args.varied)
    title = (
        f"{args.model} on {train_set.name} ({len(train_set)} train, {len(test_set)} test), "
        f"{args.epochs} epoch{'s' * (args.epochs > 1)}, seed {args.seed}"
    )
    print(f"xcnn {xcnn.__version__} | {title} | {len(todo)} recipe{'s' * (len(todo) > 1)}")
    results = []
    for i, recipe in enumerate(todo, start=1):
        print(f"[{i}/{len(todo)}] {recipe.label}", flush=True)
        results.append(run(recipe, train_set, test_set, args))

    summary = table(results)
    print()
    print(summary, end="")
    command = shlex.join(
        ["python", "examples/compare.py", *(sys.argv[1:] if argv is None else argv)]
    )
    fixed = ", ".join(
        f"{k}={'per optimizer' if v is None else v}"
        for k, v in DEFAULTS.items()
        if k not in args.varied
    )
    markdown = (
        f"# Recipe comparison\n\n`{command}`\n\n{title}; other settings: {fixed}.\n\n"
        f"{summary}\n![loss and accuracy per epoch](compare.png)\n"
    )
    record = {
        "command": command,
        "title": title,
        "recipes": [
            {
                "label": r.recipe.label,
                "settings": r.recipe.settings,
                "history": r.history.to_dict(),
                "seconds": r.seconds,
                "diverged_in_epoch": r.diverged,
            }
            for r in results
        ],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    chart = plot(results, title, args.out / "compare.png")
    atomic_write(args.out / "results.md", lambda tmp: tmp.write_text(markdown, encoding="utf-8"))
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(args.out / "results.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(f"\nwritten: {chart}, {args.out / 'results.md'}, {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, RuntimeError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
