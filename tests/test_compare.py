"""examples/compare.py: the chart, the table, and a recipe's numbers equal to its solo run."""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xcnn import models, nn

REPO = Path(__file__).resolve().parents[1]
COMPARE = REPO / "examples" / "compare.py"
#: History fields that must match bit for bit (the others are wall-clock times).
EXACT = ("epochs", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")


def run(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("XCNN_BACKEND", None)
    command = [sys.executable, str(COMPARE), "--out", str(out), "--no-progress", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def compare():
    """examples/compare.py as a module (it imports examples/train.py, its sibling)."""
    sys.path.insert(0, str(REPO / "examples"))
    try:
        yield importlib.import_module("compare")
    finally:
        sys.path.remove(str(REPO / "examples"))


SMALL = ("--epochs", "1", "--train-subset", "400", "--test-subset", "200")


def test_two_recipes_give_chart_table_results_and_a_recipe_equals_its_solo_run(tmp_path):
    out = run(tmp_path / "both", "--vary", "optimizer=sgd,adam", *SMALL)
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "both" / "results.json").read_text())["recipes"]
    assert [r["label"] for r in results] == ["optimizer=sgd", "optimizer=adam"]
    assert [r["settings"]["lr"] for r in results] == [0.1, 0.001]  # per-optimizer defaults
    sgd, adam = (r["history"] for r in results)
    assert sgd["train_loss"] != adam["train_loss"]  # the recipes really differ

    # The table, printed and in results.md: a row per recipe with the history's final numbers.
    rows = {}
    for line in out.stdout.splitlines():
        match = re.fullmatch(
            r"\| (optimizer=\w+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", line
        )
        if match:
            rows[match[1]] = [float(v) for v in match.groups()[1:]]
    assert list(rows) == ["optimizer=sgd", "optimizer=adam"], out.stdout
    for result in results:
        h = result["history"]
        accuracy, test_loss, train_loss, seconds = rows[result["label"]]
        assert accuracy == round(h["val_accuracy"][-1], 4)
        assert test_loss == round(h["val_loss"][-1], 4)
        assert train_loss == round(h["train_loss"][-1], 4)
        assert seconds == round(result["seconds"], 1) and seconds >= h["seconds"][-1] - 0.05
        assert 0.1 < h["val_accuracy"][-1] <= 1  # 400 images, one epoch: above chance (0.1)
    markdown = (tmp_path / "both" / "results.md").read_text()
    for line in out.stdout.splitlines():
        if line.startswith("| optimizer="):
            assert line in markdown.splitlines()
    assert (
        "compare.py --out" in markdown and "![loss and accuracy per epoch](compare.png)" in markdown
    )

    from PIL import Image

    with Image.open(tmp_path / "both" / "compare.png") as chart:
        assert chart.format == "PNG" and chart.size == (1100, 420)
        # Two recipes' colours are drawn: C0 (blue) and C1 (orange) pixels are present.
        pixels = np.asarray(chart.convert("RGB")).reshape(-1, 3)
    for colour in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):
        assert (np.abs(pixels.astype(int) - colour).sum(axis=1) < 10).sum() > 50

    # Adam ran after SGD above; alone, it must give the same numbers bit for bit.
    solo = run(tmp_path / "solo", "--vary", "optimizer=adam", *SMALL)
    assert solo.returncode == 0, solo.stderr
    (alone,) = json.loads((tmp_path / "solo" / "results.json").read_text())["recipes"]
    assert alone["settings"] == results[1]["settings"]
    for key in EXACT:
        assert alone["history"][key] == adam[key], key


def test_dropout_model_recipe_equals_its_solo_run(tmp_path):
    """simple_cnn draws dropout masks and, with an init recipe, weights from its own streams."""
    args = ("--model", "simple_cnn", "--vary", "batch_norm=on", "--epochs", "1")
    args += ("--train-subset", "128", "--test-subset", "64")
    both = run(tmp_path / "both", "--vary", "init=xavier,normal0.05", *args)
    assert both.returncode == 0, both.stderr
    solo = run(tmp_path / "solo", "--vary", "init=normal0.05", *args)
    assert solo.returncode == 0, solo.stderr
    first, second = json.loads((tmp_path / "both" / "results.json").read_text())["recipes"]
    (alone,) = json.loads((tmp_path / "solo" / "results.json").read_text())["recipes"]
    assert first["history"]["train_loss"] != second["history"]["train_loss"]
    assert second["label"] == "init=normal0.05"
    for key in EXACT:
        assert alone["history"][key] == second["history"][key], key


def test_cross_product_order_labels_and_defaults(compare):
    varied = compare.parse_vary(["optimizer=sgd,momentum", "lr=0.5", "batch_norm=off,on"])
    recipes = compare.recipes(varied)
    assert [r.label for r in recipes] == [
        "optimizer=sgd batch_norm=off",
        "optimizer=sgd batch_norm=on",
        "optimizer=momentum batch_norm=off",
        "optimizer=momentum batch_norm=on",
    ]
    assert all(r.settings["lr"] == 0.5 for r in recipes)  # a single value fixes a setting
    assert recipes[0].settings == compare.DEFAULTS | {"optimizer": "sgd", "lr": 0.5}
    (alone,) = compare.recipes(compare.parse_vary(["optimizer=momentum"]))
    assert alone.label == "optimizer=momentum" and alone.settings["lr"] == 0.01
    (default,) = compare.recipes({})
    assert default.label == "defaults" and default.settings["optimizer"] == "adam"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("optimiser=sgd", "unknown key 'optimiser'; valid keys: optimizer, activation, init"),
        ("optimizer=rmsprop", "'rmsprop' is not a valid value; valid: sgd, momentum, adam"),
        ("activation=gelu", "valid: relu, leaky_relu, sigmoid, tanh"),
        ("init=normal", "valid: default, kaiming, xavier, normal<std>"),
        ("init=normal-1", "init: 'normal-1' is not a valid value"),
        ("batch_norm=yes", "valid: off, on"),
        ("lr=0", "lr: '0' is not a valid value; valid: a positive number"),
        ("lr=nan", "lr: 'nan' is not a valid value"),
        ("batch_size=1.5", "valid: a positive integer"),
        ("optimizer", "--vary takes KEY=V1,V2,..., got 'optimizer'"),
        ("optimizer=sgd,sgd", "sgd listed more than once"),
    ],
)
def test_unknown_keys_and_values_list_the_valid_ones(compare, item, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        compare.parse_vary([item])


def test_bad_vary_exits_with_the_message(tmp_path):
    out = run(tmp_path, "--vary", "optimizer=sgd", "--vary", "optimizer=adam")
    assert out.returncode == 2
    assert "--vary optimizer is given twice" in out.stderr
    out = run(tmp_path, "--model", "resnet20", "--vary", "activation=tanh")
    assert out.returncode == 2
    assert "--vary activation needs a model that takes it (lenet5, simple_cnn)" in out.stderr
    assert not (tmp_path / "results.md").exists()


@pytest.mark.parametrize("scheme", ["kaiming", "xavier", "normal0.01"])
def test_init_schemes_draw_their_distribution_and_zero_the_biases(compare, scheme):
    model = models.lenet5(rng=0)
    compare.initialise(model, scheme, seed=0)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer in layers:
        w = np.asarray(layer.weight.data, dtype=np.float64)
        fan_in, fan_out = nn.init.fans(tuple(layer.weight.shape))
        assert np.all(np.asarray(layer.bias.data) == 0)
        if scheme == "xavier":
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
            continue
        std = math.sqrt(2 / fan_in) if scheme == "kaiming" else 0.01
        # The sample std of n normal draws is within 5 standard errors of std.
        assert abs(w.std() - std) < 5 * std / math.sqrt(2 * w.size), (layer, w.std(), std)
    again = models.lenet5(rng=0)
    compare.initialise(again, scheme, seed=0)
    assert all(np.array_equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
