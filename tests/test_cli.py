"""examples/train.py, the command users run: a real one-epoch run and every bad argument."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "examples" / "train.py"


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory, write_blob_mnist) -> Path:
    """A 128/64-image MNIST-format dataset whose classes are easy to tell apart."""
    folder = tmp_path_factory.mktemp("mnist")
    sizes = {"train": 128, "t10k": 64}
    return write_blob_mnist(folder, sizes, noise=40, brightness=200, suffix=".gz")


def run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("XCNN_BACKEND", None)
    return subprocess.run(
        [sys.executable, str(TRAIN), *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_one_epoch_run_prints_epoch_line_accuracy_plot_and_checkpoint(tiny_mnist, tmp_path):
    plot, ckpt = tmp_path / "history.png", tmp_path / "run.ckpt"
    out = run(
        "--dataset", "mnist", "--data-dir", str(tiny_mnist), "--epochs", "2",
        "--batch-size", "16", "--no-progress", "--plot", str(plot), "--checkpoint", str(ckpt),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 2, out.stdout
    assert re.fullmatch(r"test accuracy: (0|1)\.\d{4}", lines[-1]), lines[-1]
    assert float(lines[-1].split(": ")[1]) > 0.2  # chance is 0.1
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ckpt.is_file() and ckpt.stat().st_size > 100_000  # LeNet-5 weights + Adam state

    # --resume from the finished run continues to a longer schedule and exits cleanly.
    resumed = run(
        "--dataset", "mnist", "--data-dir", str(tiny_mnist), "--epochs", "3",
        "--batch-size", "16", "--no-progress", "--checkpoint", str(ckpt), "--resume",
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert sum(line.startswith("epoch ") for line in resumed.stdout.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "expected a positive integer, got 0"),
        (["--batch-size", "many"], "expected a positive integer, got 'many'"),
        (["--lr", "-1"], "expected a positive finite number"),
        (["--model", "vgg16"], "invalid choice: 'vgg16'"),
        (["--backend", "tensorflow"], "invalid choice: 'tensorflow'"),
        (["--resume"], "--resume needs --checkpoint PATH"),
        (["--data-dir", "/no/such/dir"], "--data-dir /no/such/dir does not exist"),
    ],
)
def test_bad_arguments_exit_non_zero_with_a_clear_message(args, message):
    out = run(*args)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_corrupt_dataset_file_is_named_and_nothing_is_trained(tiny_mnist, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_mnist.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    labels = broken / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:20])  # truncated gzip stream
    ckpt = tmp_path / "never.ckpt"
    out = run("--dataset", "mnist", "--data-dir", str(broken), "--checkpoint", str(ckpt))
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and "train-labels-idx1-ubyte.gz" in out.stderr
    assert "Traceback" not in out.stderr
    assert not ckpt.exists()


def test_cupy_backend_without_gpu_is_refused_clearly(tiny_mnist):
    from xcnn import backends

    if backends._probe_cupy()[0]:
        pytest.skip("a usable GPU is present: the refusal cannot happen here")
    out = run("--dataset", "mnist", "--data-dir", str(tiny_mnist), "--backend", "cupy")
    assert out.returncode == 1
    assert "the 'cupy' backend cannot be used" in out.stderr
    assert "Traceback" not in out.stderr
