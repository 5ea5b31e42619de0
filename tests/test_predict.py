"""examples/predict.py on a checkpoint of examples/train.py: the same answers as evaluate."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xcnn
from xcnn import data, models
from xcnn.io import read_metadata
from xcnn.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
#: Images of the bundled test sample exported as PNGs (20 per class on average).
IMAGES = 200


def run(script: str, *args: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["XCNN_DATA"] = str(data_dir)  # offline: the bundled sample; never the user's cache
    env.pop("XCNN_BACKEND", None)
    command = [sys.executable, str(EXAMPLES / script), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A one-epoch LeNet-5 checkpoint of examples/train.py, and test-sample PNGs."""
    folder = tmp_path_factory.mktemp("predict")
    checkpoint = folder / "run.ckpt"
    out = run(
        "train.py", "--dataset", "sample", "--epochs", "1", "--no-progress",
        "--checkpoint", str(checkpoint), data_dir=folder,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    sample = data.FashionMNISTSample(train=False)
    subset = data.ArrayDataset(sample.images[:IMAGES], sample.labels[:IMAGES], sample.classes)
    data.export_images(subset, folder / "images")
    return checkpoint, folder / "images"


def test_train_checkpoint_carries_what_predict_needs(trained):
    meta = read_metadata(trained[0])
    assert meta["classes"] == list(data.FashionMNIST.class_names)
    assert meta["model_name"] == "lenet5"
    assert meta["model_args"] == {"in_channels": 1, "num_classes": 10, "input_size": 28}
    assert meta["input_shape"] == [1, 28, 28]
    assert meta["normalize"] is None
    assert meta["epoch"] == 1


def test_predictions_reproduce_evaluate_and_the_model_softmax(trained, tmp_path):
    checkpoint, images = trained
    folder = data.ImageFolder(images)
    paths = [path for path, _ in folder.samples]
    report = tmp_path / "predictions.json"
    out = run(
        "predict.py", *paths, "--checkpoint", str(checkpoint), "--top-k", "3",
        "--json", str(report), data_dir=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    results = json.loads(report.read_text())
    assert [r["image"] for r in results] == paths

    classes = read_metadata(checkpoint)["classes"]
    # export_images names folders after the classes, "/" replaced by "_".
    truth = [classes.index(n) for n in (c.replace("_", "/") for c in folder.classes)]
    labels = np.array([truth[label] for label in folder.labels])
    # The same decoded images, labelled in the model's class order.
    same = data.ArrayDataset(folder.images, labels, classes)

    model = models.lenet5()
    xcnn.load(checkpoint, model, restore_rng=False)
    accuracy = xcnn.evaluate(model, data.DataLoader(same, 256))["accuracy"]
    correct = sum(r["classes"][0] == classes[y] for r, y in zip(results, labels, strict=True))
    assert correct == round(accuracy * len(folder))
    assert correct > 0.3 * len(folder)  # one epoch reaches about 0.6; chance is 0.1

    model.eval()
    with xcnn.no_grad():
        (x, _), *rest = data.DataLoader(same, 256)
        assert not rest  # one batch, as predict.py's default batch size makes it
        logits = model(xcnn.Tensor(x)).data
        probabilities = np.asarray(F.softmax(logits, dim=1).data)
    torch = pytest.importorskip("torch")
    expected = torch.softmax(torch.from_numpy(np.asarray(logits, dtype=np.float64)), 1).numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-7)
    lines = out.stdout.splitlines()
    for i, result in enumerate(results):
        order = np.argsort(-probabilities[i], kind="stable")[:3]
        assert result["classes"] == [classes[k] for k in order]
        assert result["probabilities"] == [float(probabilities[i, k]) for k in order]
        assert lines[4 * i] == paths[i]
        for rank in range(3):
            name, shown = re.fullmatch(
                r"  \d\. (.+?) +(\d\.\d{4})", lines[4 * i + 1 + rank]
            ).groups()
            assert (name, shown) == (classes[order[rank]], f"{probabilities[i, order[rank]]:.4f}")


def test_colour_and_larger_images_are_converted_as_the_model_expects(trained, tmp_path):
    from PIL import Image

    checkpoint, images = trained
    grey = sorted(images.glob("Sneaker/*.png"))[0]
    with Image.open(grey) as im:
        im.convert("RGB").save(tmp_path / "rgb.png")  # R = G = B: the same grey after luma
        im.convert("RGB").resize((56, 56), Image.Resampling.NEAREST).save(tmp_path / "big.png")
    report = tmp_path / "out.json"
    out = run(
        "predict.py", str(grey), str(tmp_path / "rgb.png"), str(tmp_path / "big.png"),
        "--checkpoint", str(checkpoint), "--top-k", "10", "--json", str(report), data_dir=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    same, rgb, big = json.loads(report.read_text())
    assert rgb["classes"] == same["classes"] and rgb["probabilities"] == same["probabilities"]
    assert sorted(big["classes"]) == sorted(same["classes"])  # all ten, ranked
    assert abs(sum(big["probabilities"]) - 1) < 1e-5


def test_errors_name_the_file_and_say_how_to_get_a_usable_checkpoint(trained, tmp_path):
    checkpoint, images = trained
    image = str(sorted(images.glob("Bag/*.png"))[0])
    missing = run(
        "predict.py", str(tmp_path / "nope.png"), "--checkpoint", str(checkpoint), data_dir=tmp_path
    )
    assert (
        missing.returncode == 2 and f"no such image file: {tmp_path / 'nope.png'}" in missing.stderr
    )

    no_file = run(
        "predict.py", image, "--checkpoint", str(tmp_path / "none.ckpt"), data_dir=tmp_path
    )
    assert no_file.returncode == 1 and "none.ckpt' does not exist" in no_file.stderr

    bare = tmp_path / "bare.ckpt"
    xcnn.save(bare, models.lenet5(rng=0), classes=["a"] * 10)
    unusable = run("predict.py", image, "--checkpoint", str(bare), data_dir=tmp_path)
    assert unusable.returncode == 1
    assert "lacks what predict needs in its metadata: 'model_name'" in unusable.stderr
    assert "python examples/train.py --checkpoint PATH" in unusable.stderr

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    unreadable = run(
        "predict.py", image, str(broken), "--checkpoint", str(checkpoint), data_dir=tmp_path
    )
    assert unreadable.returncode == 1
    assert f"cannot read image {str(broken)!r}" in unreadable.stderr

    too_many = run(
        "predict.py", image, "--checkpoint", str(checkpoint), "--top-k", "11", data_dir=tmp_path
    )
    assert (
        too_many.returncode == 1 and "--top-k 11 exceeds the model's 10 classes" in too_many.stderr
    )
