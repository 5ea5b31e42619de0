"""examples/train.py, the command users run: a real one-epoch run and every bad argument."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "examples" / "train.py"


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory, write_blob_mnist) -> Path:
    """A 128/64-image MNIST-format dataset whose classes are easy to tell apart."""
    folder = tmp_path_factory.mktemp("mnist")
    sizes = {"train": 128, "t10k": 64}
    return write_blob_mnist(folder, sizes, noise=40, brightness=200, suffix=".gz")


def run(*args: str, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["XCNN_DIST_TIMEOUT"] = "60"  # a rank that waits for nothing fails the test, never hangs
    env.pop("XCNN_BACKEND", None)
    command = [*launcher, sys.executable, str(TRAIN), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


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


def test_report_writes_six_pictures_after_training_on_the_sample(tmp_path):
    pytest.importorskip("matplotlib", reason="--report needs matplotlib: pip install 'xcnn[plot]'")
    import matplotlib.image

    folder = tmp_path / "report"
    out = run("--dataset", "sample", "--epochs", "1", "--batch-size", "128", "--no-progress",
              "--report", str(folder))  # fmt: skip
    assert out.returncode == 0, out.stderr
    kinds = ("samples", "filters", "feature_maps", "confusion_matrix", "worst_errors", "history")
    printed = [line for line in out.stdout.splitlines() if line.startswith("report written to ")]
    assert printed == [f"report written to {folder / kind}.png" for kind in kinds]
    for kind in kinds:
        image = matplotlib.image.imread(folder / f"{kind}.png")
        assert image.shape[0] >= 100 and image.shape[1] >= 400
        assert image[..., :3].std() > 0.05, kind  # drawn, not a blank canvas
    assert out.stdout.strip().splitlines()[-1].startswith("test accuracy: ")


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


# -- --distributed --------------------------------------------------------------------


def mpiexec_or_skip() -> str:
    """The ``mpiexec`` that goes with this interpreter's mpi4py; skip (saying why) without one."""
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed: pip install 'xcnn[mpi]' (nox's tests-numpy does)")
    local = Path(sys.executable).with_name("mpiexec")
    found = str(local) if local.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip(f"no mpiexec next to {sys.executable} or on PATH: pip install mpich")
    return found


def test_distributed_on_two_ranks_prints_once_and_resumes(tmp_path):
    mpiexec = mpiexec_or_skip()
    ckpt, plot = tmp_path / "run.ckpt", tmp_path / "history.png"
    common = ["--distributed", "--dataset", "sample", "--no-progress", "--checkpoint", str(ckpt)]
    out = run(*common, "--epochs", "1", "--plot", str(plot), launcher=(mpiexec, "-n", "2"))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 5, out.stdout  # header, epoch, plot, time, accuracy: rank 0's only
    assert lines[0].startswith("xcnn ") and "batch 64 x 2 ranks (1 thread each)" in lines[0]
    assert lines[1].startswith("epoch 1/1 | loss ")
    assert lines[2] == f"plot written to {plot}"
    assert re.fullmatch(r"test accuracy: 0\.\d{4}", lines[-1]), lines[-1]
    assert float(lines[-1].split(": ")[1]) > 0.3  # ten classes: chance is 0.1
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Traceback" not in out.stderr

    # The printed accuracy counts each of the 1000 test images once: the checkpoint's
    # weights, evaluated by one process, give the same number.
    import xcnn
    from xcnn import data, models

    model = models.lenet5(rng=0)
    meta = xcnn.load(ckpt, model)
    assert meta["epoch"] == 1
    accuracy = xcnn.evaluate(model, data.DataLoader(data.FashionMNISTSample(train=False), 1000))
    assert lines[-1] == f"test accuracy: {accuracy['accuracy']:.4f}"

    # Both ranks resume from rank 0's checkpoint.
    resumed = run(*common, "--epochs", "2", "--resume", launcher=(mpiexec, "-n", "2"))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    lines = resumed.stdout.strip().splitlines()
    assert lines.count(f"resumed from {ckpt} after epoch 1") == 1
    assert [line[:9] for line in lines if line.startswith("epoch ")] == ["epoch 2/2"]
    assert sum(line.startswith("test accuracy: ") for line in lines) == 1


def test_ranks_started_with_different_settings_are_refused(tmp_path):
    mpiexec = mpiexec_or_skip()
    args = ["--distributed", "--dataset", "sample", "--epochs", "1", "--no-progress"]
    # MPMD: rank 0 runs the first command line, rank 1 the second (which run() appends).
    rank0 = (mpiexec, "-n", "1", sys.executable, str(TRAIN), *args, "--lr", "0.01")
    out = run(*args, "--lr", "0.001", launcher=(*rank0, ":", "-n", "1"))
    assert out.returncode != 0
    assert "lr" in out.stderr and "0.01" in out.stderr and "0.001" in out.stderr, out.stderr
    assert "epoch 1/1" not in out.stdout


def test_distributed_in_a_world_of_one_trains_as_without_it(tiny_mnist):
    args = ["--dataset", "mnist", "--data-dir", str(tiny_mnist), "--epochs", "1"]
    args += ["--batch-size", "16", "--no-progress", "--threads", "1"]
    plain, distributed = run(*args), run(*args, "--distributed")
    assert plain.returncode == 0 == distributed.returncode, plain.stderr + distributed.stderr
    plain_lines, lines = plain.stdout.splitlines(), distributed.stdout.splitlines()
    assert "batch 16 x 1 rank (1 thread each)" in lines[0]
    assert lines[-1] == plain_lines[-1]  # the same test accuracy
    loss = [line.split(" | ")[1] for line in (plain_lines[1], lines[1])]
    assert loss[0] == loss[1] and loss[0].startswith("loss ")


def write_image_folder(root: Path, per_class: int, seed: int) -> None:
    """Two classes of 28x28 grey PNGs: a bright bar high up ("top") or low down ("bottom")."""
    image_module = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(seed)
    for label, name in enumerate(("bottom", "top")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, size=(28, 28), dtype=np.uint8)
            row = 4 if name == "top" else 18
            pixels[row : row + 6, 4:24] += 180
            image_module.fromarray(pixels).save(root / name / f"{label}_{i:02d}.png")


def test_folder_dataset_without_split_holds_out_a_seeded_tenth(tmp_path):
    write_image_folder(tmp_path / "images", per_class=20, seed=0)
    args = ["--dataset", "folder", "--data-dir", str(tmp_path / "images"), "--epochs", "1"]
    out = run(*args, "--batch-size", "8", "--no-progress")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert "held out 4 of 40 images for testing (seed 0), training on 36" in lines[0]
    assert "(36 train, 4 test)" in lines[1]
    assert sum(line.startswith("epoch 1/1") for line in lines) == 1
    assert re.fullmatch(r"test accuracy: (0|1)\.\d{4}", lines[-1]), lines[-1]


def test_folder_dataset_with_train_and_val_folders(tmp_path):
    write_image_folder(tmp_path / "images" / "train", per_class=16, seed=1)
    write_image_folder(tmp_path / "images" / "val", per_class=4, seed=2)
    args = ["--dataset", "folder", "--data-dir", str(tmp_path / "images"), "--epochs", "1"]
    out = run(*args, "--batch-size", "8", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "held out" not in out.stdout
    assert "(32 train, 8 test)" in out.stdout
    assert re.fullmatch(r"test accuracy: (0|1)\.\d{4}", out.stdout.strip().splitlines()[-1])


def test_folder_dataset_needs_data_dir_and_names_an_empty_class(tmp_path):
    out = run("--dataset", "folder")
    assert out.returncode != 0 and "--dataset folder needs --data-dir" in out.stderr
    write_image_folder(tmp_path / "images", per_class=2, seed=3)
    (tmp_path / "images" / "middle").mkdir()
    out = run("--dataset", "folder", "--data-dir", str(tmp_path / "images"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "class folder" in out.stderr and "middle' holds no images" in out.stderr


def test_summary_prints_the_model_table_before_training(tiny_mnist):
    out = run(
        "--dataset", "mnist", "--data-dir", str(tiny_mnist), "--epochs", "1",
        "--batch-size", "32", "--no-progress", "--summary",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = out.stdout
    # LeNet-5 on 28x28: 61,706 parameters; the table comes before the first epoch line.
    assert "Total params: 61,706" in text, text
    assert re.search(r"Conv2d: 1-1\s+\[1, 6, 28, 28\]\s+156", text), text
    assert text.index("Total params") < text.index("epoch 1/1")
    assert text.strip().splitlines()[-1].startswith("test accuracy: ")


def test_export_onnx_writes_a_model_with_the_printed_accuracy(tiny_mnist, tmp_path):
    pytest.importorskip("onnx", reason="onnx is not installed (pip install 'xcnn[onnx]')")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from xcnn import data

    path = tmp_path / "lenet5.onnx"
    out = run(
        "--dataset", "mnist", "--data-dir", str(tiny_mnist), "--epochs", "1",
        "--batch-size", "16", "--no-progress", "--export-onnx", str(path),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"ONNX model written to {path}" in out.stdout
    accuracy = float(out.stdout.strip().splitlines()[-1].split(": ")[1])
    # ONNX Runtime classifies the whole test set (one batch of 64, traced at 2) as xcnn did.
    test_set = data.load_dataset("mnist", root=tiny_mnist, train=False)
    images, labels = next(iter(data.DataLoader(test_set, len(test_set))))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": np.asarray(images)})
    assert logits.shape == (len(test_set), 10)
    assert round(float(np.mean(logits.argmax(1) == np.asarray(labels))), 4) == accuracy


@pytest.mark.parametrize("flag", ["--mixup", "--cutmix"])
def test_mixup_and_cutmix_train_and_resume(tiny_mnist, tmp_path, flag):
    ckpt = tmp_path / "run.ckpt"
    common = ("--dataset", "mnist", "--data-dir", str(tiny_mnist), "--batch-size", "16")
    common += ("--no-progress", "--checkpoint", str(ckpt), flag, "0.4")
    out = run(*common, "--epochs", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 2, out.stdout
    assert float(lines[-1].split(": ")[1]) > 0.2  # chance is 0.1
    resumed = run(*common, "--epochs", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert sum(line.startswith("epoch 3/3") for line in resumed.stdout.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mixup", "0"], "argument --mixup: expected a positive finite number, got 0"),
        (["--cutmix", "-1"], "argument --cutmix: expected a positive finite number"),
        (["--mixup", "1", "--cutmix", "1"], "argument --cutmix: not allowed with argument --mixup"),
    ],
)
def test_bad_mixing_arguments_exit_with_a_clear_message(args, message):
    out = run(*args)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert message in out.stderr, out.stderr
