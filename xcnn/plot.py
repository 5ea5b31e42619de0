"""Pictures of the data and the network, each written to a PNG: ``xcnn.plot``.

>>> import numpy as np, xcnn
>>> from xcnn import plot
>>> train = xcnn.data.load_dataset("sample")
>>> path = plot.samples(train, "samples.png", n=16)  # doctest: +SKIP
>>> plot.confusion_counts(np.array([0, 1, 1]), np.array([0, 1, 0]))
array([[1, 1],
       [0, 1]])

=================================  ==============================================
:func:`samples`                    a grid of images titled with their labels
:func:`filters`                    the first convolution's filters, one tile each
:func:`feature_maps`               one image's feature maps after each convolution
:func:`confusion_matrix`           counts of (true, predicted) class pairs
:func:`worst_errors`               the most confidently misclassified images
:func:`history`                    loss and accuracy per epoch, train vs validation
:func:`report`                     all six for a trained model, in one folder
=================================  ==============================================

Each function writes its PNG atomically (readers see the old file or the new one)
and returns its path. Models run in eval mode under ``no_grad``, on the active
backend, in batches prepared as :class:`xcnn.data.DataLoader` prepares them
(``uint8`` images become ``float32 / 255``, then ``transform``); their train/eval
modes are restored afterwards.

Needs matplotlib (``pip install 'xcnn[plot]'``), imported at the first plot. Figures
are drawn on the Agg canvas without pyplot, so the caller's matplotlib backend and
pyplot state are left alone and no display is needed.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xcnn import backends
from xcnn._atomic import atomic_write_bytes
from xcnn.autograd import no_grad
from xcnn.autograd.tensor import as_array
from xcnn.nn.containers import unfolded
from xcnn.nn.conv import Conv2d
from xcnn.nn.module import Module

__all__ = [
    "confusion_counts",
    "confusion_matrix",
    "feature_maps",
    "filters",
    "history",
    "most_confident_errors",
    "report",
    "samples",
    "worst_errors",
]

DPI = 100
# Longest class name shown in a tile's title; longer ones end in an ellipsis.
NAME_CHARS = 14


# -- the data ---------------------------------------------------------------------------


def samples(
    data: Any,
    path: str | os.PathLike,
    labels: Any = None,
    *,
    classes: Sequence[str] | None = None,
    n: int = 64,
    ncols: int | None = None,
    seed: int | None = None,
    title: str | None = None,
) -> Path:
    """Write a grid of ``n`` images, each titled with its label (its class name when known).

    Parameters
    ----------
    data : dataset or array
        A dataset with ``images`` (``(N, C, H, W)``) and, optionally, ``labels`` and
        ``classes`` (every :mod:`xcnn.data` dataset), or an array of images ``(N, C, H, W)``
        or ``(N, H, W)``, with ``C`` 1 (greyscale) or 3 (RGB). ``uint8`` images are
        shown as they are, floating ones in ``[0, 1]`` as they are, other floating ones
        (e.g. normalised) stretched to ``[0, 1]`` per image.
    path : str or os.PathLike
        Where to write the PNG.
    labels : array of int, optional
        ``(N,)`` class indices; default: the dataset's ``labels``, if any. Without labels
        the tiles have no titles.
    classes : sequence of str, optional
        Class names (``classes[label]``); default: the dataset's ``classes``, if any,
        else the labels are shown as numbers.
    n : int, default 64
        How many images to show (all of them if there are fewer).
    ncols : int, optional
        Tiles per row; default: ``ceil(sqrt(n))``.
    seed : int, optional
        Show ``n`` images drawn at random (without replacement) with this seed;
        default: the first ``n``. A seed helps with datasets sorted by class.
    title : str, optional
        Shown above the grid; default: the dataset's ``name``, if any.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    n = _positive(n, "samples", "n")
    images = getattr(data, "images", data)
    if labels is None:
        labels = getattr(data, "labels", None)
    if classes is None:
        classes = getattr(data, "classes", None)
    if title is None:
        title = getattr(data, "name", None)
    images = _image_batch(images, "samples")
    total = images.shape[0]
    if total == 0:
        raise ValueError("samples: there are no images to show (got an empty batch)")
    if labels is not None:
        labels = _labels(labels, "samples", "labels")
        if labels.shape[0] != total:
            raise ValueError(f"samples: {total} images but {labels.shape[0]} labels")
    count = min(n, total)
    if seed is None:
        chosen = np.arange(count)
    else:
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))
    ncols = math.ceil(math.sqrt(count)) if ncols is None else _positive(ncols, "samples", "ncols")
    ncols = min(ncols, count)
    pictures = _displayable(images[chosen])
    titles = None
    if labels is not None:
        titles = [_class_name(int(labels[i]), classes) for i in chosen]
    figure = _tiles(
        "samples", pictures, titles, ncols, tile=(1.25, 1.45 if titles else 1.15), title=title
    )
    return _save(figure, path)


# -- the network ------------------------------------------------------------------------


def filters(model: Any, path: str | os.PathLike, *, layer: str | None = None) -> Path:
    """Write the filters of a model's first ``Conv2d`` (or of ``layer``), one tile each.

    Each filter is stretched to ``[0, 1]`` on its own (its minimum black, its maximum
    white), so filters of any scale can be compared by their pattern. A layer with
    3 input channels shows one RGB tile per output channel; any other layer one
    greyscale tile per output channel and input channel (one row per output channel
    when there are several input channels).

    Parameters
    ----------
    model : Module
        A model holding a :class:`xcnn.nn.Conv2d`, or the ``Conv2d`` itself.
    path : str or os.PathLike
        Where to write the PNG.
    layer : str, optional
        The dotted name of the ``Conv2d`` to show (as in ``model.named_modules()``,
        e.g. ``"3"``); default: the first one.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    name, conv = _find_conv(model, layer)
    weight = backends.to_host(as_array(conv.weight)).astype(np.float64)
    out_ch, in_ch, kh, kw = weight.shape
    low = weight.min(axis=(1, 2, 3), keepdims=True)
    span = weight.max(axis=(1, 2, 3), keepdims=True) - low
    # A constant filter (e.g. all zeros) shows as mid-grey rather than dividing by 0.
    scaled = np.where(span > 0, (weight - low) / np.where(span > 0, span, 1), 0.5)
    if in_ch == 3:
        grid = _mosaic(scaled.transpose(0, 2, 3, 1), math.ceil(math.sqrt(out_ch)))
        kind = "RGB, one per output channel"
    elif in_ch == 1:
        grid = _mosaic(scaled[:, 0], math.ceil(math.sqrt(out_ch)))
        kind = "one per output channel"
    else:
        grid = _mosaic(scaled.reshape(out_ch * in_ch, kh, kw), in_ch)
        kind = "rows: output channels, columns: input channels"
    where = f"'{name}' " if name else ""
    heading = f"{where}{conv!r}\n{out_ch} filters ({kind})"
    return _save(_picture("filters", grid, heading, cmap="gray", vmin=0, vmax=1), path)


def feature_maps(
    model: Any,
    image: Any,
    path: str | os.PathLike,
    *,
    transform: Callable[[Any], Any] | None = None,
    max_channels: int = 16,
) -> Path:
    """Write what each ``Conv2d`` of ``model`` outputs for one image, a row per layer.

    The model runs once on the image (as a batch of one) with every convolution's
    output recorded; each row shows the first ``max_channels`` channels of one
    convolution's output, each stretched to ``[0, 1]`` on its own (viridis colours),
    under the input image itself.

    Parameters
    ----------
    model : Module
        A model holding at least one :class:`xcnn.nn.Conv2d`.
    image : array
        One image ``(C, H, W)`` (or ``(H, W)``, or a batch of one ``(1, C, H, W)``),
        ``uint8`` (divided by 255, as the DataLoader does) or floating.
    path : str or os.PathLike
        Where to write the PNG.
    transform : callable, optional
        Applied to the image batch on the backend before the model, e.g. the
        ``Normalize`` the model was trained with.
    max_channels : int, default 16
        The most channels shown per layer.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    max_channels = _positive(max_channels, "feature_maps", "max_channels")
    convs = _named_convs(model)
    if not convs:
        raise ValueError(
            f"feature_maps: {type(model).__name__} holds no Conv2d layer, so it has no "
            "feature maps to show"
        )
    batch = backends.to_host(as_array(image))
    if batch.ndim == 2:
        batch = batch[None, None]
    elif batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[0] != 1:
        raise ValueError(
            "feature_maps: expected one image of shape (C, H, W), (H, W) or (1, C, H, W), "
            f"got shape {tuple(np.shape(image))}"
        )
    outputs = _record_convs(model, convs, _model_input(batch, transform))
    rows = [_displayable(batch)[0]]
    labels = ["input " + "x".join(map(str, batch.shape[1:]))]
    for name, conv, out in outputs:
        maps = out[0, :max_channels].astype(np.float64)
        low = maps.min(axis=(1, 2), keepdims=True)
        span = maps.max(axis=(1, 2), keepdims=True) - low
        rows.append(np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0.0))
        shape = "x".join(map(str, out.shape[1:]))
        shown = f" (first {maps.shape[0]})" if out.shape[1] > maps.shape[0] else ""
        labels.append(f"{name or 'model'}\n{conv._label()}\n{shape}{shown}")
    return _save(_map_rows(rows, labels, max_channels), path)


# -- the predictions --------------------------------------------------------------------


def confusion_counts(predictions: Any, targets: Any, num_classes: int | None = None) -> np.ndarray:
    """The confusion matrix: ``counts[i, j]`` images of class ``i`` predicted as ``j``.

    Rows are the true classes, columns the predicted ones (scikit-learn's and
    torchmetrics' convention), so the diagonal holds the correct predictions.

    Parameters
    ----------
    predictions : array
        Predicted classes ``(N,)``, or scores ``(N, K)`` (logits or probabilities,
        whose ``argmax`` is the prediction).
    targets : array of int
        True classes ``(N,)``.
    num_classes : int, optional
        ``K``; default: the scores' width, else one more than the largest class seen.

    Returns
    -------
    numpy.ndarray
        ``int64``, shape ``(K, K)``.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.plot import confusion_counts
    >>> confusion_counts(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.array([0, 1, 1]))
    array([[1, 0],
           [1, 1]])
    """
    predicted = _predicted_classes(predictions)
    targets = _labels(targets, "confusion_counts", "targets")
    if predicted.shape != targets.shape:
        raise ValueError(
            f"confusion_counts: {predicted.shape[0]} predictions but {targets.shape[0]} targets"
        )
    scores = np.ndim(predictions) == 2
    if num_classes is None:
        seen = max(int(predicted.max(initial=-1)), int(targets.max(initial=-1))) + 1
        num_classes = int(np.shape(predictions)[1]) if scores else max(seen, 1)
    k = _positive(num_classes, "confusion_counts", "num_classes")
    for name, values in (("predictions", predicted), ("targets", targets)):
        bad = values[(values < 0) | (values >= k)]
        if bad.size:
            raise ValueError(
                f"confusion_counts: {name} must lie in [0, {k}) for num_classes={k}, "
                f"got {int(bad[0])}"
            )
    return np.bincount(targets * k + predicted, minlength=k * k).reshape(k, k)


def confusion_matrix(
    model: Any,
    data: Any,
    path: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    transform: Callable[[Any], Any] | None = None,
    batch_size: int = 256,
) -> Path:
    """Write the confusion matrix of a model on a dataset (or of given predictions).

    Each cell shows its count; rows are the true classes, columns the predicted ones
    (see :func:`confusion_counts`), named by ``classes``.

    Parameters
    ----------
    model : Module, callable or array
        A model (anything mapping an image batch ``(N, C, H, W)`` to scores
        ``(N, K)``), run on ``data``; or its predictions already made: classes
        ``(N,)`` or scores ``(N, K)``.
    data : dataset or array
        A dataset with ``images`` and ``labels`` (and ``classes``), or, with
        predictions, the true classes ``(N,)``.
    path : str or os.PathLike
        Where to write the PNG.
    classes : sequence of str, optional
        Class names; default: the dataset's ``classes``, else numbers.
    transform : callable, optional
        Applied to each image batch before the model (as the DataLoader's).
    batch_size : int, default 256
        Images per forward pass.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    scores, targets, classes = _scores_and_targets(
        "confusion_matrix", model, data, classes, transform, batch_size
    )
    k = len(classes) if classes is not None else None
    if k is not None and np.ndim(scores) == 2 and np.shape(scores)[1] != k:
        raise ValueError(
            f"confusion_matrix: the predictions have {np.shape(scores)[1]} classes but "
            f"{k} class names were given"
        )
    counts = confusion_counts(scores, targets, k)
    return _save(_matrix_figure(counts, classes), path)


def most_confident_errors(probabilities: Any, targets: Any, n: int) -> np.ndarray:
    """Indices of the ``n`` misclassified images whose wrong class had the highest probability.

    Parameters
    ----------
    probabilities : array
        ``(N, K)`` class probabilities (e.g. a softmax); the prediction is the argmax.
    targets : array of int
        ``(N,)`` true classes.
    n : int
        How many to return at most (fewer when fewer images are wrong).

    Returns
    -------
    numpy.ndarray
        ``int64`` indices, most confident first; equal confidences in index order.

    Examples
    --------
    >>> import numpy as np
    >>> from xcnn.plot import most_confident_errors
    >>> p = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    >>> most_confident_errors(p, np.array([1, 1, 1, 0]), n=5)
    array([0, 3, 2])
    """
    n = _positive(n, "most_confident_errors", "n")
    probabilities = _probabilities(probabilities, "most_confident_errors")
    targets = _labels(targets, "most_confident_errors", "targets")
    if probabilities.shape[0] != targets.shape[0]:
        raise ValueError(
            f"most_confident_errors: {probabilities.shape[0]} rows of probabilities but "
            f"{targets.shape[0]} targets"
        )
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != targets)
    confidence = probabilities[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")[:n]].astype(np.int64)


def worst_errors(
    model: Any,
    dataset: Any,
    path: str | os.PathLike,
    n: int = 16,
    *,
    classes: Sequence[str] | None = None,
    transform: Callable[[Any], Any] | None = None,
    batch_size: int = 256,
) -> Path:
    """Write the ``n`` images the model got wrong most confidently, worst first.

    Each tile is titled with the true class and the predicted one with its
    probability (see :func:`most_confident_errors`).

    Parameters
    ----------
    model : Module, callable or array
        A model whose outputs are logits (a softmax makes them probabilities), run on
        ``dataset``; or the probabilities already computed, ``(N, K)``.
    dataset : dataset
        ``images`` ``(N, C, H, W)`` and ``labels`` ``(N,)`` (and ``classes``).
    path : str or os.PathLike
        Where to write the PNG.
    n : int, default 16
        How many images to show at most.
    classes : sequence of str, optional
        Class names; default: the dataset's ``classes``, else numbers.
    transform : callable, optional
        Applied to each image batch before the model (as the DataLoader's).
    batch_size : int, default 256
        Images per forward pass.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    n = _positive(n, "worst_errors", "n")
    if not hasattr(dataset, "images"):
        raise TypeError(
            "worst_errors: dataset must have images and labels (an xcnn.data dataset), "
            f"got {type(dataset).__name__}"
        )
    probabilities, targets, classes = _scores_and_targets(
        "worst_errors", model, dataset, classes, transform, batch_size
    )
    if _is_model(model):
        probabilities = _softmax(probabilities)
    probabilities = _probabilities(probabilities, "worst_errors")
    images = _image_batch(dataset.images, "worst_errors")
    if images.shape[0] != probabilities.shape[0]:
        raise ValueError(
            f"worst_errors: {probabilities.shape[0]} rows of probabilities but "
            f"{images.shape[0]} images"
        )
    chosen = most_confident_errors(probabilities, targets, n)
    name = getattr(dataset, "name", "the dataset")
    if chosen.size == 0:
        heading = f"No misclassified images in {name} ({images.shape[0]} images)"
        figure = _figure("worst_errors", (6, 1))
        figure.text(0.5, 0.5, heading, ha="center", va="center")
        return _save(figure, path)
    predicted = probabilities.argmax(axis=1)
    titles = [
        f"true: {_class_name(int(targets[i]), classes)}\n"
        f"pred: {_class_name(int(predicted[i]), classes)} {probabilities[i, predicted[i]]:.2f}"
        for i in chosen
    ]
    wrong = int((predicted != targets).sum())
    heading = f"Most confident errors: {chosen.size} of {wrong} wrong in {name}"
    ncols = min(chosen.size, math.ceil(math.sqrt(chosen.size)))
    figure = _tiles(
        "worst_errors", _displayable(images[chosen]), titles, ncols, (1.6, 1.75), heading
    )
    return _save(figure, path)


# -- training ---------------------------------------------------------------------------


def history(history: Any, path: str | os.PathLike) -> Path:
    """Write two panels, loss and accuracy per epoch, train vs validation.

    Also available as ``xcnn.plot_history``. Epochs without a value (no validation
    set, or a loss without accuracy) are simply not drawn.

    Parameters
    ----------
    history : History or dict
        What :func:`xcnn.fit` returned, or its :meth:`~xcnn.train.History.to_dict`.
    path : str or os.PathLike
        Where to write the PNG.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from xcnn.train import History

    figure = _figure("history", (10, 4), layout="constrained")
    if not isinstance(history, History):
        history = History.from_dict(history)
    data = history.to_dict()
    if not data["epochs"]:
        raise ValueError("history: the history has no epochs to plot")
    from matplotlib.ticker import MaxNLocator

    axes = figure.subplots(1, 2)
    epochs = data["epochs"]
    for ax, metric, title in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        for split, label, style in (("train", "train", "o-"), ("val", "validation", "s--")):
            values = [math.nan if v is None else v for v in data[f"{split}_{metric}"]]
            if all(math.isnan(v) for v in values):
                continue
            ax.plot(epochs, values, style, label=label, markersize=4)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:  # else the one-point range is ticked in fractions of an epoch
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return _save(figure, path)


_plot_history = history  # for report, whose argument of that name hides the function


def report(
    model: Any,
    train_set: Any,
    test_set: Any,
    history: Any,
    folder: str | os.PathLike,
    *,
    transform: Callable[[Any], Any] | None = None,
    batch_size: int = 256,
) -> dict[str, Path]:
    """Write the six pictures of a trained model into ``folder``.

    ``samples.png`` (64 training images drawn with seed 0), ``filters.png``,
    ``feature_maps.png`` (of the first test image), ``confusion_matrix.png`` and
    ``worst_errors.png`` (on the test set) and ``history.png`` (skipped when
    ``history`` is ``None``).

    Parameters
    ----------
    model : Module
        The trained model.
    train_set, test_set : dataset
        ``images``, ``labels`` and ``classes``, as the :mod:`xcnn.data` datasets.
    history : History, dict or None
        What :func:`xcnn.fit` returned.
    folder : str or os.PathLike
        Created if missing; files of the same names are replaced.
    transform : callable, optional
        The evaluation transform of the test images (e.g. ``Normalize``).
    batch_size : int, default 256
        Images per forward pass.

    Returns
    -------
    dict of str to pathlib.Path
        The files written, by kind (``"samples"``, ``"filters"``, ...), in that order.
    """
    folder = Path(folder)
    first_image = test_set.images[0]
    steps: list[tuple[str, Callable[[Path], Path]]] = [
        ("samples", lambda p: samples(train_set, p, seed=0)),
        ("filters", lambda p: filters(model, p)),
        ("feature_maps", lambda p: feature_maps(model, first_image, p, transform=transform)),
        (
            "confusion_matrix",
            lambda p: confusion_matrix(
                model, test_set, p, transform=transform, batch_size=batch_size
            ),
        ),
        (
            "worst_errors",
            lambda p: worst_errors(model, test_set, p, transform=transform, batch_size=batch_size),
        ),
    ]
    if history is not None:
        steps.append(("history", lambda p: _plot_history(history, p)))
    return {kind: draw(folder / f"{kind}.png") for kind, draw in steps}


# -- helpers: input -----------------------------------------------------------------------


def _positive(value: Any, caller: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{caller}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _image_batch(images: Any, caller: str) -> np.ndarray:
    """Host images ``(N, C, H, W)`` with C 1 or 3, from ``(N, C, H, W)`` or ``(N, H, W)``."""
    array = backends.to_host(as_array(images))
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(
            f"{caller}: expected images of shape (N, C, H, W) with C = 1 (greyscale) or "
            f"3 (RGB), or (N, H, W), got shape {array.shape}"
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"{caller}: expected numeric images, got dtype {array.dtype}")
    return array


def _labels(values: Any, caller: str, name: str) -> np.ndarray:
    array = backends.to_host(as_array(values))
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"{caller}: expected {name} as integer class indices of shape (N,), got "
            f"{array.dtype} of shape {array.shape}"
        )
    return array.astype(np.int64, copy=False)


def _predicted_classes(predictions: Any) -> np.ndarray:
    array = backends.to_host(as_array(predictions))
    if array.ndim == 2 and array.shape[1] >= 1:
        return array.argmax(axis=1).astype(np.int64)
    return _labels(array, "confusion_counts", "predictions (or scores of shape (N, K))")


def _probabilities(values: Any, caller: str) -> np.ndarray:
    array = backends.to_host(as_array(values)).astype(np.float64, copy=False)
    if array.ndim != 2 or array.shape[1] < 1:
        raise ValueError(
            f"{caller}: expected class probabilities of shape (N, K), got shape {array.shape}"
        )
    sums = array.sum(axis=1)
    if array.size and (array.min() < 0 or not np.allclose(sums, 1.0, atol=1e-3)):
        raise ValueError(
            f"{caller}: expected class probabilities (non-negative, each row summing to 1), "
            f"got rows summing to {sums.min():.4g}..{sums.max():.4g}; apply a softmax to "
            "logits, or pass the model itself"
        )
    return array


def _class_name(label: int, classes: Sequence[str] | None) -> str:
    if classes is None or not 0 <= label < len(classes):
        return str(label)
    name = str(classes[label])
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"


def _displayable(images: np.ndarray) -> np.ndarray:
    """Floats in [0, 1], ``(N, H, W)`` for greyscale or ``(N, H, W, 3)`` for RGB."""
    if images.dtype == np.uint8:
        shown = images.astype(np.float64) / 255.0
    else:
        shown = images.astype(np.float64)
        if shown.size and (shown.min() < 0 or shown.max() > 1):
            # Normalised or raw-valued images: each stretched over [0, 1] on its own.
            low = shown.min(axis=(1, 2, 3), keepdims=True)
            span = shown.max(axis=(1, 2, 3), keepdims=True) - low
            shown = np.where(span > 0, (shown - low) / np.where(span > 0, span, 1), 0.0)
    return shown[:, 0] if shown.shape[1] == 1 else shown.transpose(0, 2, 3, 1)


# -- helpers: running the model ----------------------------------------------------------


def _is_model(value: Any) -> bool:
    return isinstance(value, Module) or (callable(value) and not hasattr(value, "shape"))


def _model_input(batch: np.ndarray, transform: Callable[[Any], Any] | None) -> Any:
    """The batch on the backend as the DataLoader gives it: float32, uint8 divided by 255."""
    backend = backends.current()
    x = backend.asarray(batch.astype(np.float32))
    if batch.dtype == np.uint8:
        x = x / 255.0
    return x if transform is None else transform(x)


class _EvalMode:
    """``model.eval()`` under ``no_grad`` for a ``with`` block; every module's mode restored."""

    def __init__(self, model: Any):
        self.modes = [(m, m.training) for m in model.modules()] if isinstance(model, Module) else []
        self.model = model
        self.grad = no_grad()

    def __enter__(self) -> None:
        if isinstance(self.model, Module):
            self.model.eval()
        self.grad.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.grad.__exit__(*exc)
        for module, training in self.modes:
            module.training = training


def _scores(model: Any, images: np.ndarray, transform: Any, batch_size: int) -> np.ndarray:
    """The model's outputs ``(N, K)`` on the host, in float64."""
    batch_size = _positive(batch_size, "xcnn.plot", "batch_size")
    outputs = []
    with _EvalMode(model):
        for start in range(0, images.shape[0], batch_size):
            out = model(_model_input(images[start : start + batch_size], transform))
            outputs.append(backends.to_host(as_array(out)).astype(np.float64))
    scores = np.concatenate(outputs) if outputs else np.zeros((0, 1))
    if scores.ndim != 2:
        raise ValueError(
            f"xcnn.plot: expected the model to output scores of shape (N, K), got shape "
            f"{scores.shape}"
        )
    return scores


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _scores_and_targets(
    caller: str, model: Any, data: Any, classes: Any, transform: Any, batch_size: int
) -> tuple[np.ndarray, np.ndarray, Sequence[str] | None]:
    """``(scores or predictions, targets, classes)`` from a model and a dataset, or given."""
    if classes is None:
        classes = getattr(data, "classes", None)
    if _is_model(model):
        if not hasattr(data, "images") or not hasattr(data, "labels"):
            raise TypeError(
                f"{caller}: to run a model, data must be a dataset with images and labels, "
                f"got {type(data).__name__}"
            )
        images = _image_batch(data.images, caller)
        return (
            _scores(model, images, transform, batch_size),
            _labels(data.labels, caller, "labels"),
            classes,
        )
    targets = getattr(data, "labels", data)
    return backends.to_host(as_array(model)), _labels(targets, caller, "targets"), classes


def _named_convs(model: Any) -> list[tuple[str, Conv2d]]:
    if isinstance(model, Conv2d):
        return [("", model)]
    if not isinstance(model, Module):
        raise TypeError(f"xcnn.plot: expected an xcnn Module, got {type(model).__name__}")
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Conv2d)]


def _find_conv(model: Any, layer: str | None) -> tuple[str, Conv2d]:
    convs = _named_convs(model)
    if not convs:
        raise ValueError(
            f"filters: {type(model).__name__} holds no Conv2d layer, so it has no filters to show"
        )
    if layer is None:
        return convs[0]
    for name, conv in convs:
        if name == layer:
            return name, conv
    raise ValueError(
        f"filters: no Conv2d named {layer!r}; the Conv2d layers are {[n for n, _ in convs]}"
    )


def _record_convs(
    model: Any, convs: list[tuple[str, Conv2d]], x: Any
) -> list[tuple[str, Conv2d, np.ndarray]]:
    """Run ``model`` on ``x`` once and return each ``Conv2d`` call's output, in call order.

    Each convolution's ``forward`` is shadowed by an instance attribute for the one
    call (``Module.__call__`` looks ``forward`` up on the instance), which touches
    no other model, unlike patching the class.
    """
    recorded: list[tuple[str, Conv2d, np.ndarray]] = []

    def recording(name: str, conv: Conv2d) -> Callable[..., Any]:
        inner = conv.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            out = inner(*args, **kwargs)
            recorded.append((name, conv, backends.to_host(as_array(out))))
            return out

        return forward

    shadowed = [(conv, conv.__dict__.get("forward")) for _, conv in convs]
    try:
        for name, conv in convs:
            object.__setattr__(conv, "forward", recording(name, conv))
        # A convolution folded with its batch norm (eval mode) would run without its own
        # forward: unfolded, each Conv2d's output is its own.
        with _EvalMode(model), unfolded():
            model(x)
    finally:
        for conv, previous in shadowed:
            if previous is None:
                conv.__dict__.pop("forward", None)
            else:
                object.__setattr__(conv, "forward", previous)
    if not recorded:
        raise RuntimeError(
            f"feature_maps: the forward pass of {type(model).__name__} ran none of its "
            "Conv2d layers' forward"
        )
    return recorded


# -- helpers: drawing ---------------------------------------------------------------------


def _figure(caller: str, size: tuple[float, float], **kwargs: Any) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend switch)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            f"xcnn.plot.{caller} needs matplotlib, an optional extra: pip install 'xcnn[plot]'"
        ) from error
    figure = Figure(figsize=size, dpi=DPI, **kwargs)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: str | os.PathLike) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


def _tiles(
    caller: str,
    pictures: np.ndarray,
    titles: Sequence[str] | None,
    ncols: int,
    tile: tuple[float, float],
    title: str | None,
) -> Any:
    """One axes per picture on a fixed grid of ``tile`` inches, so the PNG's size follows
    the number of rows and columns exactly."""
    count = pictures.shape[0]
    nrows = math.ceil(count / ncols)
    tile_w, tile_h = tile
    header = 0.4 if title else 0.1
    width, height = ncols * tile_w + 0.2, nrows * tile_h + header
    figure = _figure(caller, (width, height))
    if title:
        figure.suptitle(title, y=1 - 0.08 / height, va="top", fontsize=11)
    title_h = (0.18 + 0.14 * titles[0].count("\n")) if titles else 0.0
    side = min(tile_w - 0.15, tile_h - title_h - 0.15)
    for i in range(count):
        row, col = divmod(i, ncols)
        left = 0.1 + col * tile_w + (tile_w - side) / 2
        bottom = height - header - (row + 1) * tile_h + 0.08
        ax = figure.add_axes((left / width, bottom / height, side / width, side / height))
        grey = pictures.ndim == 3
        ax.imshow(pictures[i], cmap="gray" if grey else None, vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles:
            ax.set_title(titles[i], fontsize=8, pad=2, linespacing=1.1)
    return figure


def _mosaic(tiles: np.ndarray, ncols: int, gap: int = 1) -> np.ndarray:
    """Tiles ``(N, h, w[, 3])`` laid out ``ncols`` per row, separated by NaN (drawn white)."""
    count, h, w = tiles.shape[:3]
    nrows = math.ceil(count / ncols)
    shape = (nrows * (h + gap) - gap, ncols * (w + gap) - gap, *tiles.shape[3:])
    grid = np.full(shape, np.nan)
    for i in range(count):
        r, c = divmod(i, ncols)
        grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tiles[i]
    return grid


def _picture(caller: str, grid: np.ndarray, heading: str, **imshow: Any) -> Any:
    """A mosaic drawn at 0.3 inch per pixel, less when that would pass 8 by 12 inches."""
    rows, cols = grid.shape[:2]
    scale = min(0.3, 8 / cols, 12 / rows)
    width = max(5.0, cols * scale + 0.4)
    height = rows * scale + 0.8
    figure = _figure(caller, (width, height))
    left = (width - cols * scale) / 2
    ax = figure.add_axes((left / width, 0.2 / height, cols * scale / width, rows * scale / height))
    if grid.ndim == 3:  # RGB: NaN gaps become white
        grid = np.where(np.isnan(grid), 1.0, grid)
    from matplotlib import colormaps

    cmap = colormaps[imshow.pop("cmap", "gray")].with_extremes(bad="white")
    ax.imshow(grid, interpolation="nearest", cmap=cmap, **imshow)
    ax.set_axis_off()
    figure.suptitle(heading, y=1 - 0.08 / height, va="top", fontsize=9, linespacing=1.3)
    return figure


def _map_rows(rows: list[np.ndarray], labels: list[str], max_channels: int) -> Any:
    """The input image above one row of feature maps per convolution."""
    tile, gap = 0.75, 0.12
    # About 0.07 inch per character of 8-point text, so no label runs into the maps.
    label_w = 0.3 + 0.07 * max(len(line) for label in labels for line in label.split("\n"))
    ncols = min(max_channels, max(r.shape[0] for r in rows[1:]))
    width = label_w + ncols * (tile + 0.05) + 0.1
    height = len(rows) * (tile + gap) + 0.4
    figure = _figure("feature_maps", (width, height))
    figure.suptitle("Feature maps after each convolution", y=1 - 0.08 / height, va="top")
    for r, (maps, label) in enumerate(zip(rows, labels, strict=True)):
        bottom = height - 0.4 - (r + 1) * (tile + gap) + gap / 2
        figure.text(0.1 / width, (bottom + tile / 2) / height, label, va="center", fontsize=8)
        pictures = [maps] if r == 0 else list(maps)
        for c, picture in enumerate(pictures):
            left = label_w + c * (tile + 0.05)
            ax = figure.add_axes((left / width, bottom / height, tile / width, tile / height))
            if r == 0:
                grey = picture.ndim == 2
                ax.imshow(picture, cmap="gray" if grey else None, vmin=0, vmax=1)
            else:
                ax.imshow(picture, cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
    return figure


def _matrix_figure(counts: np.ndarray, classes: Sequence[str] | None) -> Any:
    k = counts.shape[0]
    names = [_class_name(i, classes) for i in range(k)]
    side = max(4.5, 0.55 * k + 2.5)
    figure = _figure("confusion_matrix", (side + 1.0, side), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(counts, cmap="Blues", vmin=0)
    figure.colorbar(image, ax=ax, shrink=0.8)
    total = int(counts.sum())
    accuracy = f", accuracy {np.trace(counts) / total:.4f}" if total else ""
    ax.set_title(f"Confusion matrix ({total} images{accuracy})", fontsize=11)
    ax.set_xticks(range(k), names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fontsize = 9 if k <= 12 else max(5, 9 - (k - 12) // 4)
    dark = counts.max() / 2 if counts.size else 0
    for (i, j), value in np.ndenumerate(counts):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            fontsize=fontsize,
            color="white" if value > dark else "black",
        )
    return figure
