"""xcnn.plot: every picture is read back and compared as pixels, not only written.

Each test checks what a plot must show: the same input gives the same pixels, a
changed input changes them, the size follows the number of tiles, and the
numbers behind the pictures (confusion counts, the most confident errors, the
feature maps) against an independent computation.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="xcnn.plot needs matplotlib: pip install 'xcnn[plot]'")

import matplotlib.image

import xcnn
from xcnn import data, models, nn, plot
from xcnn.train import History

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["zero", "one", "two"]


def pixels(path: Path) -> np.ndarray:
    """The PNG at ``path`` as an RGBA float array, after checking that it is one."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] == 4
    return image


def same(a: Path, b: Path) -> bool:
    x, y = pixels(a), pixels(b)
    return x.shape == y.shape and np.array_equal(x, y)


def blobs(n: int = 24, seed: int = 0, size: int = 12) -> data.ArrayDataset:
    """Greyscale images whose bright square moves with the label, 3 classes."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.integers(0, 60, size=(n, 1, size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, 0, 3 * label : 3 * label + 4, 2:8] = 230
    return data.ArrayDataset(images, labels, CLASSES, name="blobs")


# -- samples ------------------------------------------------------------------------------


def test_samples_same_input_same_pixels_changed_image_or_label_changes_them(tmp_path):
    ds = blobs()
    a = plot.samples(ds, tmp_path / "a.png", n=9)
    assert a == tmp_path / "a.png" and a.stat().st_size > 1000
    assert same(plot.samples(ds, tmp_path / "b.png", n=9), a)

    changed = ds.images.copy()
    changed[4] = 255 - changed[4]
    assert not same(plot.samples(changed, tmp_path / "c.png", ds.labels, n=9, title="blobs"), a)
    # The same arrays given separately draw the dataset's picture exactly.
    given = plot.samples(ds.images, tmp_path / "d.png", ds.labels, classes=CLASSES, title="blobs")
    assert same(plot.samples(ds, tmp_path / "d9.png"), given)

    relabelled = ds.labels.copy()
    relabelled[0] = (relabelled[0] + 1) % 3
    titled = plot.samples(ds.images, tmp_path / "e.png", relabelled, classes=CLASSES, n=9)
    untitled = plot.samples(ds.images, tmp_path / "f.png", ds.labels, classes=CLASSES, n=9)
    assert not same(titled, untitled)
    numbers = plot.samples(ds.images, tmp_path / "g.png", ds.labels, n=9)  # 0, 1, 2: no names
    assert not same(numbers, untitled)
    # Only the chosen images count: changing image 20 leaves the first 9 alone.
    later = ds.images.copy()
    later[20] = 255
    assert same(plot.samples(later, tmp_path / "h.png", ds.labels, classes=CLASSES, n=9), untitled)


def test_samples_size_follows_n_and_ncols(tmp_path):
    ds = blobs(n=100)
    shapes = {n: pixels(plot.samples(ds, tmp_path / f"{n}.png", n=n)).shape for n in (4, 16, 64)}
    (h4, w4, _), (h16, w16, _), (h64, w64, _) = shapes[4], shapes[16], shapes[64]
    # 2x2, 4x4 and 8x8 tiles of a fixed size: each step adds twice the rows and columns.
    assert h4 < h16 < h64 and w4 < w16 < w64
    assert h64 - h16 == 2 * (h16 - h4) and w64 - w16 == 2 * (w16 - w4)
    wide = pixels(plot.samples(ds, tmp_path / "wide.png", n=16, ncols=8)).shape
    assert wide[1] == w64 and wide[0] == h4  # 8 columns, 2 rows
    # Asking for more images than there are shows them all.
    small = blobs(n=16)
    assert same(plot.samples(small, tmp_path / "all.png", n=1000), tmp_path / "16.png")
    without = plot.samples(ds.images, tmp_path / "nolabels.png", n=16)
    assert pixels(without).shape[0] < h16  # no title lines above the tiles


def test_samples_seed_draws_other_images_reproducibly(tmp_path):
    ds = blobs(n=100)
    first = plot.samples(ds, tmp_path / "first.png", n=9)
    a = plot.samples(ds, tmp_path / "a.png", n=9, seed=1)
    assert same(plot.samples(ds, tmp_path / "b.png", n=9, seed=1), a)
    assert not same(a, first)
    assert not same(plot.samples(ds, tmp_path / "c.png", n=9, seed=2), a)


def test_samples_shows_rgb_in_colour_and_grey_as_grey(tmp_path):
    red = np.zeros((1, 3, 8, 8), np.uint8)
    red[:, 0] = 255
    image = pixels(plot.samples(red, tmp_path / "red.png"))
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    redness = (r > 0.9) & (g < 0.1) & (b < 0.1)
    assert redness.sum() > 50 * 50  # the tile, about one inch at 100 dpi
    grey = pixels(plot.samples(red[:, :1], tmp_path / "grey.png"))
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    # (N, H, W) is greyscale too, and floats in [0, 1] mean what uint8 / 255 means.
    ds = blobs()
    u8 = plot.samples(ds.images[:, 0], tmp_path / "u8.png", n=4)
    assert same(plot.samples(ds.images / 255.0, tmp_path / "float.png", n=4), u8)
    # Floats outside [0, 1] (normalised images) are stretched over [0, 1] per image.
    low = ds.images.min(axis=(1, 2, 3), keepdims=True).astype(np.float64)
    high = ds.images.max(axis=(1, 2, 3), keepdims=True)
    stretched = plot.samples((ds.images - low) / (high - low), tmp_path / "stretched.png", n=4)
    normalised = (ds.images / 255.0 - 0.3) / 0.2
    assert same(plot.samples(normalised, tmp_path / "normalised.png", n=4), stretched)
    assert not same(stretched, u8)


def test_samples_rejects_bad_input(tmp_path):
    ds = blobs()
    for n in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=r"samples: n must be a positive integer"):
            plot.samples(ds, tmp_path / "x.png", n=n)
    with pytest.raises(ValueError, match=r"C = 1 \(greyscale\) or 3 \(RGB\).*\(4, 2, 5, 5\)"):
        plot.samples(np.zeros((4, 2, 5, 5)), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"got shape \(5, 5\)"):
        plot.samples(np.zeros((5, 5)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="24 images but 3 labels"):
        plot.samples(ds.images, tmp_path / "x.png", np.arange(3))
    with pytest.raises(ValueError, match="no images"):
        plot.samples(np.zeros((0, 1, 4, 4)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="ncols must be a positive integer"):
        plot.samples(ds, tmp_path / "x.png", ncols=0)
    assert not (tmp_path / "x.png").exists()


# -- filters ------------------------------------------------------------------------------


def conv_with(weight: np.ndarray) -> nn.Conv2d:
    out_ch, in_ch, kh, _ = weight.shape
    conv = nn.Conv2d(in_ch, out_ch, kh, rng=0)
    conv.weight.data = weight.astype(np.float32)
    return conv


def test_filters_are_normalised_per_filter_and_follow_the_weights(tmp_path):
    w = np.random.default_rng(0).normal(size=(6, 1, 5, 5))
    a = plot.filters(conv_with(w), tmp_path / "a.png")
    # Scaling and shifting one filter leaves its picture: each is stretched on its own.
    affine = w.copy()
    affine[2] = 7.0 * affine[2] + 3.0
    assert same(plot.filters(conv_with(affine), tmp_path / "b.png"), a)
    swapped = w.copy()
    swapped[2, 0, 0, 0], swapped[2, 0, 4, 4] = w[2, 0, 4, 4], w[2, 0, 0, 0]
    assert not same(plot.filters(conv_with(swapped), tmp_path / "c.png"), a)
    # A model shows its first convolution, or the one named by layer.
    model = models.lenet5(rng=0)
    first = plot.filters(model, tmp_path / "first.png")
    assert same(plot.filters(model, tmp_path / "named.png", layer="0"), first)
    second = plot.filters(model, tmp_path / "second.png", layer="3")  # 16 x 6 tiles
    assert pixels(second).shape[0] > pixels(first).shape[0]


def test_filters_show_three_input_channels_as_colour(tmp_path):
    w = np.zeros((4, 3, 3, 3))
    w[:, 0] = 1.0  # red channel at the filter's maximum, green and blue at its minimum
    image = pixels(plot.filters(conv_with(w), tmp_path / "rgb.png"))
    redness = (image[..., 0] > 0.9) & (image[..., 1] < 0.1) & (image[..., 2] < 0.1)
    assert redness.sum() > 4 * 20 * 20
    grey = pixels(plot.filters(conv_with(w[:, :1] + np.eye(3)), tmp_path / "grey.png"))
    assert np.array_equal(grey[..., 0], grey[..., 2])


def test_filters_rejects_a_model_without_conv2d_and_unknown_layers(tmp_path):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, rng=0))
    with pytest.raises(ValueError, match="filters: Sequential holds no Conv2d layer"):
        plot.filters(mlp, tmp_path / "x.png")
    with pytest.raises(
        ValueError, match=r"no Conv2d named '7'; the Conv2d layers are \['0', '3'\]"
    ):
        plot.filters(models.lenet5(rng=0), tmp_path / "x.png", layer="7")
    with pytest.raises(TypeError, match="expected an xcnn Module, got ndarray"):
        plot.filters(np.zeros((6, 1, 5, 5)), tmp_path / "x.png")


# -- feature maps -------------------------------------------------------------------------


def test_feature_maps_are_the_conv_outputs_and_leave_the_model_as_it_was(backend):
    model = models.lenet5(rng=0).to(backend.name)
    image = data.FashionMNISTSample(train=False).images[0]
    x = backend.asarray(image[None].astype(np.float32) / 255.0)
    convs = plot._named_convs(model)
    recorded = plot._record_convs(model, convs, x)
    # Run by hand: conv, ReLU, pool, conv, in eval mode.
    with xcnn.no_grad():
        first = model[0].eval()(x)
        second = model[3].eval()(model[2](model[1](first)))
    model.train()
    assert [(name, conv) for name, conv, _ in recorded] == [("0", model[0]), ("3", model[3])]
    np.testing.assert_allclose(recorded[0][2], backend.to_numpy(first), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(recorded[1][2], backend.to_numpy(second), rtol=1e-5, atol=1e-5)
    assert all(m.training for m in model.modules())
    assert all("forward" not in conv.__dict__ for _, conv in convs)


def test_feature_maps_of_a_model_that_folds_its_batch_norms(tmp_path):
    # resnet20 in eval mode runs each conv + batch norm pair as one folded convolution;
    # the feature maps are still every Conv2d's own output.
    model = models.resnet20(rng=0)
    convs = plot._named_convs(model)
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    recorded = plot._record_convs(model, convs, x)
    assert [name for name, _, _ in recorded] == [name for name, _ in convs]
    first = dict(convs)[recorded[0][0]]
    with xcnn.no_grad():
        want = first(xcnn.Tensor(x)).data
    np.testing.assert_array_equal(recorded[0][2], want)
    assert model.training  # the mode it had
    path = plot.feature_maps(model, x[0], tmp_path / "maps.png")
    assert pixels(path).size > 0


def test_feature_maps_picture_follows_image_weights_and_max_channels(tmp_path):
    model = models.lenet5(rng=0)
    images = data.FashionMNISTSample(train=False).images
    a = plot.feature_maps(model, images[0], tmp_path / "a.png")
    assert same(plot.feature_maps(model, images[0][None], tmp_path / "b.png"), a)
    assert same(plot.feature_maps(model, images[0, 0], tmp_path / "hw.png"), a)  # (H, W)
    assert not same(plot.feature_maps(model, images[1], tmp_path / "c.png"), a)
    model[3].weight.data = -model[3].weight.data
    assert not same(plot.feature_maps(model, images[0], tmp_path / "d.png"), a)
    narrow = pixels(plot.feature_maps(model, images[0], tmp_path / "e.png", max_channels=4))
    assert narrow.shape[1] < pixels(a).shape[1] and narrow.shape[0] == pixels(a).shape[0]
    # A transform is applied before the model, as the DataLoader would.
    flipped = plot.feature_maps(model, images[0], tmp_path / "f.png", transform=lambda x: 1 - x)
    assert not same(flipped, tmp_path / "d.png")


def test_feature_maps_of_a_module_with_its_own_forward(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Conv2d(3, 4, 3, rng=0)
            self.head = nn.Linear(4, 2, rng=0)

        def forward(self, x):
            y = nn.functional.relu(self.features(x))
            return self.head(y.mean(dim=(2, 3)))

    rgb = np.random.default_rng(0).integers(0, 256, size=(3, 10, 10), dtype=np.uint8)
    path = plot.feature_maps(Net(), rgb, tmp_path / "net.png")
    assert pixels(path).shape[0] > 150  # the input row and one row of maps


def test_feature_maps_rejects_bad_input(tmp_path):
    model = models.lenet5(rng=0)
    image = np.zeros((1, 28, 28), np.uint8)
    with pytest.raises(ValueError, match="holds no Conv2d layer"):
        plot.feature_maps(nn.Sequential(nn.Flatten()), image, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"expected one image .* got shape \(2, 1, 28, 28\)"):
        plot.feature_maps(model, np.zeros((2, 1, 28, 28)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="max_channels must be a positive integer, got 0"):
        plot.feature_maps(model, image, tmp_path / "x.png", max_channels=0)
    with pytest.raises(ValueError, match=r"Conv2d\(1->6\): expected input with 1 channel"):
        plot.feature_maps(model, np.zeros((3, 28, 28)), tmp_path / "x.png")
    assert all("forward" not in m.__dict__ for m in model.modules())


# -- confusion matrix ---------------------------------------------------------------------


def reference_counts(predicted, targets, k):
    counts = np.zeros((k, k), np.int64)
    np.add.at(counts, (targets, predicted), 1)
    return counts


def test_confusion_counts_match_an_independent_count():
    rng = np.random.default_rng(0)
    targets, predicted = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    counts = plot.confusion_counts(predicted, targets)
    assert counts.dtype == np.int64 and counts.shape == (7, 7)
    np.testing.assert_array_equal(counts, reference_counts(predicted, targets, 7))
    scores = rng.normal(size=(500, 9))
    np.testing.assert_array_equal(
        plot.confusion_counts(scores, targets), reference_counts(scores.argmax(1), targets, 9)
    )
    assert plot.confusion_counts(predicted, targets, num_classes=10).shape == (10, 10)
    assert plot.confusion_counts(np.array([], np.int64), np.array([], np.int64), 2).sum() == 0


def test_confusion_counts_reject_bad_input():
    with pytest.raises(ValueError, match="3 predictions but 2 targets"):
        plot.confusion_counts(np.array([0, 1, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 2\) for num_classes=2, got 5"):
        plot.confusion_counts(np.array([0, 1]), np.array([0, 5]), num_classes=2)
    with pytest.raises(ValueError, match=r"predictions must lie in \[0, 3\).*got -1"):
        plot.confusion_counts(np.array([0, -1]), np.array([0, 2]))
    with pytest.raises(ValueError, match="integer class indices"):
        plot.confusion_counts(np.array([0, 1]), np.array([0.0, 1.0]))


def pixel_classifier(num_classes: int = 3, size: int = 12) -> nn.Sequential:
    """A linear model with set weights: logit k is 20 times pixel (0, 0, k) of the image."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(size * size, num_classes, rng=0))
    weight = np.zeros((num_classes, size * size), np.float32)
    weight[np.arange(num_classes), np.arange(num_classes)] = 20.0
    model[1].weight.data = weight
    model[1].bias.data = np.zeros(num_classes, np.float32)
    return model


def test_confusion_matrix_from_a_model_equals_the_one_from_its_predictions(tmp_path, backend):
    ds = blobs(n=30)
    ds.images[:, 0, 0, :3] = np.random.default_rng(1).integers(0, 256, size=(30, 3))
    model = pixel_classifier().to(backend.name)
    expected = (ds.images[:, 0, 0, :3].astype(np.float64)).argmax(axis=1)
    # Computed independently: the model run by the DataLoader's batches.
    loader_pred = np.concatenate(
        [backend.to_numpy(model.eval()(x)).argmax(1) for x, _ in data.DataLoader(ds, 7)]
    )
    model.train()
    np.testing.assert_array_equal(loader_pred, expected)
    from_model = plot.confusion_matrix(model, ds, tmp_path / "model.png", batch_size=8)
    from_preds = plot.confusion_matrix(expected, ds, tmp_path / "preds.png")
    assert same(from_model, from_preds)
    assert same(plot.confusion_matrix(expected, ds.labels, tmp_path / "t.png", classes=CLASSES),
                from_preds)  # fmt: skip
    assert model.training


def test_confusion_matrix_picture_changes_with_one_prediction(tmp_path):
    targets = np.arange(30) % 3
    predicted = targets.copy()
    a = plot.confusion_matrix(predicted, targets, tmp_path / "a.png", classes=CLASSES)
    predicted[0] = 1
    b = plot.confusion_matrix(predicted, targets, tmp_path / "b.png", classes=CLASSES)
    assert pixels(a).shape == pixels(b).shape and not same(a, b)
    names = plot.confusion_matrix(predicted, targets, tmp_path / "c.png")  # 0, 1, 2
    assert not same(names, b)
    big = plot.confusion_matrix(np.arange(12), np.arange(12), tmp_path / "d.png")
    assert pixels(big).shape[0] > pixels(b).shape[0]  # more classes, larger figure
    with pytest.raises(ValueError, match="the predictions have 4 classes but 3 class names"):
        plot.confusion_matrix(np.eye(4)[:3], targets[:3], tmp_path / "e.png", classes=CLASSES)
    with pytest.raises(TypeError, match="data must be a dataset with images and labels"):
        plot.confusion_matrix(pixel_classifier(), targets, tmp_path / "e.png")


# -- worst errors -------------------------------------------------------------------------


def error_set() -> tuple[data.ArrayDataset, np.ndarray]:
    """Images whose pixels (0, 0, 0:3) set the pixel classifier's logits, and the softmax
    probabilities computed by PyTorch from those logits."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    n = 20
    images = rng.integers(0, 40, size=(n, 1, 12, 12), dtype=np.uint8)
    images[:, 0, 0, :3] = rng.permutation(np.arange(20, 256, 3))[: n * 3].reshape(n, 3)
    labels = rng.integers(0, 3, n)
    logits = torch.tensor(images[:, 0, 0, :3].astype(np.float64) / 255.0 * 20.0)
    probabilities = torch.softmax(logits, dim=1).numpy()
    return data.ArrayDataset(images, labels, CLASSES, name="errors"), probabilities


def test_most_confident_errors_are_the_wrong_ones_sorted_by_confidence():
    ds, probabilities = error_set()
    predicted = probabilities.argmax(1)
    wrong = [i for i in range(len(ds)) if predicted[i] != ds.labels[i]]
    expected = sorted(wrong, key=lambda i: -probabilities[i, predicted[i]])
    assert len(wrong) >= 8
    np.testing.assert_array_equal(
        plot.most_confident_errors(probabilities, ds.labels, 5), expected[:5]
    )
    np.testing.assert_array_equal(
        plot.most_confident_errors(probabilities, ds.labels, 99), expected
    )
    ties = np.array([[0.2, 0.8], [0.2, 0.8], [0.9, 0.1]])
    np.testing.assert_array_equal(plot.most_confident_errors(ties, np.array([0, 0, 0]), 3), [0, 1])


def test_worst_errors_shows_exactly_the_most_confident_wrong_images(tmp_path, backend):
    ds, probabilities = error_set()
    model = pixel_classifier().to(backend.name)
    a = plot.worst_errors(model, ds, tmp_path / "a.png", n=4)
    # The probabilities themselves give the same picture.
    assert same(plot.worst_errors(probabilities, ds, tmp_path / "b.png", n=4), a)
    chosen = plot.most_confident_errors(probabilities, ds.labels, 4)
    others = [i for i in range(len(ds)) if i not in chosen]
    # Pixels outside the logits' row are free: changing them in images not shown
    # leaves the picture, changing them in a shown one changes it.
    hidden = ds.images.copy()
    hidden[others, 0, 5:, :] = 255
    hidden_set = data.ArrayDataset(hidden, ds.labels, CLASSES, name="errors")
    assert same(plot.worst_errors(model, hidden_set, tmp_path / "c.png", n=4), a)
    shown = ds.images.copy()
    shown[chosen[3], 0, 5:, :] = 255
    shown_set = data.ArrayDataset(shown, ds.labels, CLASSES, name="errors")
    assert not same(plot.worst_errors(model, shown_set, tmp_path / "d.png", n=4), a)
    more = pixels(plot.worst_errors(model, ds, tmp_path / "e.png", n=9))
    assert more.shape[0] > pixels(a).shape[0] and more.shape[1] > pixels(a).shape[1]


def test_worst_errors_without_errors_and_bad_input(tmp_path):
    ds = blobs(n=6)
    perfect = np.eye(3)[ds.labels]
    path = plot.worst_errors(perfect, ds, tmp_path / "none.png")
    assert pixels(path).shape[:2] == (100, 600)  # the one-line notice
    with pytest.raises(ValueError, match="apply a softmax to logits, or pass the model itself"):
        plot.worst_errors(perfect * 5.0, ds, tmp_path / "x.png")
    with pytest.raises(ValueError, match="worst_errors: n must be a positive integer, got 0"):
        plot.worst_errors(perfect, ds, tmp_path / "x.png", n=0)
    with pytest.raises(ValueError, match=r"expected class probabilities of shape \(N, K\)"):
        plot.worst_errors(ds.labels, ds, tmp_path / "x.png")
    with pytest.raises(ValueError, match="5 rows of probabilities but 6 images"):
        plot.worst_errors(perfect[:5], ds, tmp_path / "x.png")
    with pytest.raises(TypeError, match="dataset must have images and labels"):
        plot.worst_errors(perfect, ds.labels, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# -- history, report, import --------------------------------------------------------------


def three_epochs() -> History:
    return History.from_dict(
        {
            "epochs": [1, 2, 3],
            "train_loss": [1.0, 0.6, 0.4],
            "train_accuracy": [0.6, 0.8, 0.9],
            "val_loss": [0.9, 0.7, 0.6],
            "val_accuracy": [0.65, 0.75, 0.8],
            "seconds": [1.0] * 3,
            "images_per_second": [10.0] * 3,
            "lr": [0.1] * 3,
        }
    )


def test_history_is_plot_history_and_follows_the_values(tmp_path):
    hist = three_epochs()
    a = plot.history(hist, tmp_path / "a.png")
    assert pixels(a).shape[:2] == (400, 1000)
    assert same(xcnn.plot_history(hist, tmp_path / "b.png"), a)
    assert same(plot.history(hist.to_dict(), tmp_path / "c.png"), a)
    changed = hist.to_dict() | {"val_accuracy": [0.65, 0.75, 0.5]}
    assert not same(plot.history(changed, tmp_path / "d.png"), a)
    one = History.from_dict({k: v[:1] for k, v in hist.to_dict().items()})
    assert not same(plot.history(one, tmp_path / "e.png"), a)


def test_report_writes_six_pictures(tmp_path):
    ds = blobs(n=30)
    model = models.lenet5(num_classes=3, input_size=12, rng=0)
    written = plot.report(model, ds, ds, three_epochs(), tmp_path / "report")
    kinds = ["samples", "filters", "feature_maps", "confusion_matrix", "worst_errors", "history"]
    assert list(written) == kinds
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(
        f"{k}.png" for k in kinds
    )
    for kind, path in written.items():
        assert path == tmp_path / "report" / f"{kind}.png" and pixels(path).size
    assert list(plot.report(model, ds, ds, None, tmp_path / "r2")) == kinds[:-1]
    assert same(written["filters"], plot.filters(model, tmp_path / "f.png"))


def test_import_xcnn_and_xcnn_plot_do_not_import_matplotlib():
    code = (
        "import sys, xcnn; xcnn.fit; import xcnn.plot; "
        "assert 'matplotlib' not in sys.modules, 'imported'; "
        "assert 'plot' in dir(xcnn) and xcnn.plot.samples"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr


def test_without_matplotlib_each_plot_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    ds = blobs(n=3)
    for name, call in (
        ("samples", lambda: plot.samples(ds, tmp_path / "x.png")),
        ("filters", lambda: plot.filters(models.lenet5(rng=0), tmp_path / "x.png")),
        ("confusion_matrix", lambda: plot.confusion_matrix(ds.labels, ds, tmp_path / "x.png")),
        ("history", lambda: plot.history(three_epochs(), tmp_path / "x.png")),
    ):
        with pytest.raises(ImportError, match=rf"xcnn.plot.{name} needs matplotlib.*xcnn\[plot\]"):
            call()
