"""fit / evaluate / History / plot_history: learning, records, output, divergence, resume.

The last tests run this file as a program under ``mpiexec -n 2`` (see ``on_ranks``).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xcnn
import xcnn.io
from xcnn import backends, data, nn, optim
from xcnn.train import History, TrainingDiverged

CLASSES = 3


def blobs(n: int = 96, seed: int = 0) -> data.ArrayDataset:
    """Three well separated Gaussian blobs, as (N, 1, 4, 4) float images."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(size=(CLASSES, 16)) * 2.0
    labels = rng.integers(0, CLASSES, n)
    images = centers[labels] + rng.normal(size=(n, 16))
    return data.ArrayDataset(images.astype(np.float32).reshape(n, 1, 4, 4), labels, ["a", "b", "c"])


def mlp(seed: int = 0, p: float = 0.25) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(16, 16, rng=seed),
        nn.ReLU(),
        nn.Dropout(p, rng=seed + 1),
        nn.Linear(16, CLASSES, rng=seed + 2),
    )


def setup(seed: int = 0, lr: float = 0.05, batch_size: int = 16, loader_seed: int = 1):
    model = mlp(seed)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    loader = data.DataLoader(blobs(), batch_size, shuffle=True, seed=loader_seed)
    return model, opt, sched, loader


def test_fit_learns_and_records_one_entry_per_epoch(backend):
    model, opt, sched, loader = setup()
    val = data.DataLoader(blobs(48, seed=5), 20)
    hist = xcnn.fit(
        model, nn.CrossEntropyLoss(), opt, loader, 4, val, sched, progress=False, log_interval=2
    )
    assert isinstance(hist, History) and len(hist) == 4
    assert hist.epochs == [1, 2, 3, 4]
    assert hist.train_loss[-1] < 0.5 * hist.train_loss[0]
    assert hist.train_accuracy[-1] >= 0.9 and hist.val_accuracy[-1] >= 0.9
    assert hist.lr == [0.05, 0.05, 0.025, 0.025]
    for name in History.FIELDS:
        values = getattr(hist, name)
        assert len(values) == 4
        assert all(type(v) in (int, float) and math.isfinite(v) for v in values), name
    assert all(v > 0 for v in hist.seconds + hist.images_per_second)
    # The last validation entry is what evaluate reports for the final weights.
    final = xcnn.evaluate(model, val, nn.CrossEntropyLoss())
    assert final["accuracy"] == hist.val_accuracy[-1]
    assert final["loss"] == pytest.approx(hist.val_loss[-1], rel=1e-12)
    assert backends.namespace_name(model[1].weight.data) == backend.name


def test_train_metrics_are_the_batch_weighted_means(backend):
    # One epoch at lr=0 changes nothing, so the epoch's metrics equal evaluate's
    # on the same batches (dropout p=0 makes train and eval forward equal).
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, CLASSES, rng=3))
    loader = data.DataLoader(blobs(50), 16)  # batches of 16, 16, 16, 2
    hist = xcnn.fit(
        model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.0), loader, 1,
        progress=False, log_interval=3,
    )  # fmt: skip
    expected = xcnn.evaluate(model, loader, nn.CrossEntropyLoss())
    assert hist.train_loss[0] == pytest.approx(expected["loss"], rel=1e-6)
    assert hist.train_accuracy[0] == expected["accuracy"]
    assert hist.val_loss == [None] and hist.val_accuracy == [None]


def test_evaluate_matches_a_numpy_computation(backend):
    model = mlp(4)
    ds = blobs(37, seed=2)
    loader = data.DataLoader(ds, 10)
    result = xcnn.evaluate(model, loader, nn.CrossEntropyLoss())
    model.eval()
    logits = np.concatenate([backend.to_numpy(model(x)) for x, _ in loader]).astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(len(ds)), ds.labels].mean()
    accuracy = (logits.argmax(axis=1) == ds.labels).mean()
    assert result["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    assert xcnn.evaluate(model, loader) == {"loss": None, "accuracy": result["accuracy"]}


def test_evaluate_restores_each_modules_mode():
    model = mlp()
    loader = data.DataLoader(blobs(8), 4)
    model.train()
    model[3].eval()  # e.g. a frozen part
    xcnn.evaluate(model, loader)
    assert model.training and model[1].training and not model[3].training
    model.eval()
    xcnn.evaluate(model, loader)
    assert not any(m.training for m in model.modules())


def test_evaluate_of_an_empty_loader_is_an_error():
    with pytest.raises(ValueError, match="yielded no batches"):
        xcnn.evaluate(mlp(), [])


def test_history_to_dict_csv_and_json(tmp_path):
    hist = History()
    hist.append(
        epochs=1, train_loss=0.5, train_accuracy=0.75, val_loss=None, val_accuracy=None,
        seconds=1.5, images_per_second=100.0, lr=0.1,
    )  # fmt: skip
    hist.append(
        epochs=2, train_loss=0.25, train_accuracy=0.875, val_loss=0.3, val_accuracy=0.8,
        seconds=1.25, images_per_second=120.0, lr=0.05,
    )  # fmt: skip
    as_dict = hist.to_dict()
    assert as_dict["train_loss"] == [0.5, 0.25] and as_dict["val_loss"] == [None, 0.3]
    assert History.from_dict(as_dict) == hist

    hist.save_json(tmp_path / "h.json")
    assert json.loads((tmp_path / "h.json").read_text()) == as_dict
    hist.save_csv(tmp_path / "h.csv")
    with open(tmp_path / "h.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", *History.FIELDS[1:]]
    assert rows[0]["val_loss"] == "" and float(rows[1]["val_loss"]) == 0.3
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["lr"]) == 0.05
    assert sorted(os.listdir(tmp_path)) == ["h.csv", "h.json"]  # no temp files left

    with pytest.raises(ValueError, match="missing fields"):
        hist.append(epochs=3, train_loss=0.1)


def test_history_path_is_written_every_epoch(tmp_path):
    model, opt, _sched, loader = setup()
    seen = []

    def record(epoch, history):
        seen.append(json.loads((tmp_path / "h.json").read_text())["epochs"])

    xcnn.fit(
        model, nn.CrossEntropyLoss(), opt, loader, 2,
        progress=False, history_path=tmp_path / "h.json", callbacks=[record],
    )  # fmt: skip
    assert seen == [[1], [1, 2]]


def test_progress_false_prints_nothing(capsys):
    model, opt, _sched, loader = setup()
    xcnn.fit(model, nn.CrossEntropyLoss(), opt, loader, 2, progress=False, log_interval=1)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_progress_without_a_terminal_prints_one_line_per_epoch(capsys):
    model, opt, _sched, loader = setup()
    val = data.DataLoader(blobs(20, seed=3), 10)
    hist = xcnn.fit(model, nn.CrossEntropyLoss(), opt, loader, 3, val, log_interval=1)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert err == "" and len(lines) == 3
    for i, line in enumerate(lines):
        assert line.startswith(f"epoch {i + 1}/3 | loss {hist.train_loss[i]:.4f}")
        assert f"val_acc {hist.val_accuracy[i]:.4f}" in line and "img/s" in line


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_shows_loss_accuracy_and_speed(monkeypatch, capsys):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    model, opt, _sched, loader = setup()
    xcnn.fit(model, nn.CrossEntropyLoss(), opt, loader, 1, log_interval=1)
    bar = terminal.getvalue()
    assert "epoch 1/1" in bar and "loss=" in bar and "acc=" in bar and "img/s" in bar
    assert f"{len(loader)}/{len(loader)}" in bar
    assert capsys.readouterr().out.startswith("epoch 1/1 | loss")


class NanAfter:
    """Cross-entropy that returns NaN from call number ``bad`` (1-based) on."""

    def __init__(self, bad: int):
        self.inner = nn.CrossEntropyLoss()
        self.bad = bad
        self.calls = 0

    def __call__(self, logits, targets):
        self.calls += 1
        loss = self.inner(logits, targets)
        return loss * math.nan if self.calls >= self.bad else loss

    def backward(self):
        return self.inner.backward()


def test_non_finite_loss_stops_naming_epoch_and_step(backend, tmp_path):
    model, opt, sched, loader = setup()  # 6 steps per epoch
    path = tmp_path / "run.safetensors"
    after_epoch_1 = {}

    def keep(epoch, history):
        after_epoch_1.update(model.state_dict())

    loss_fn = NanAfter(bad=6 + 2)  # epoch 2, step 2
    with pytest.raises(TrainingDiverged) as info:
        xcnn.fit(
            model, loss_fn, opt, loader, 3, scheduler=sched, checkpoint=path,
            progress=False, log_interval=4, callbacks=[keep],
        )  # fmt: skip
    error = info.value
    assert isinstance(error, FloatingPointError) and isinstance(error, RuntimeError)
    message = str(error)
    assert "epoch 2 at step 2 (global step 8)" in message
    assert "lower learning rate" in message and str(path) in message
    assert (error.epoch, error.step, error.global_step) == (2, 2, 8)
    assert error.history.epochs == [1]
    # Caught at the next host read (step 4 of epoch 2), not at the end of the epoch.
    assert loss_fn.calls == 6 + 4
    # The checkpoint on disk is still the last good one.
    fresh = mlp(seed=9)
    assert xcnn.load(path, fresh)["epoch"] == 1
    for key, value in fresh.state_dict().items():
        np.testing.assert_array_equal(value, after_epoch_1[key])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_huge_learning_rate_diverges_with_a_clear_error():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, CLASSES, rng=0))
    opt = optim.SGD(model.parameters(), lr=1e38)
    loader = data.DataLoader(blobs(), 16)
    with pytest.raises(TrainingDiverged, match=r"epoch 1 at step \d+.*lower learning rate"):
        xcnn.fit(model, nn.CrossEntropyLoss(), opt, loader, 5, progress=False, log_interval=2)


def test_divergence_in_the_last_partial_interval_is_caught_at_epoch_end():
    model, opt, _sched, loader = setup()
    with pytest.raises(TrainingDiverged, match="epoch 1 at step 6 "):
        xcnn.fit(model, NanAfter(bad=6), opt, loader, 2, progress=False, log_interval=100)


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    epochs = 3

    def run(path, stop_after=None, seed=0, loader_seed=1):
        xcnn.manual_seed(seed)
        model, opt, sched, loader = setup(seed=seed, loader_seed=loader_seed)
        val = data.DataLoader(blobs(20, seed=3), 10)
        hist = xcnn.fit(
            model, nn.CrossEntropyLoss(), opt, loader, stop_after or epochs, val, sched,
            checkpoint=path, resume=True, progress=False, log_interval=4,
        )  # fmt: skip
        return model, opt, hist

    whole, whole_opt, whole_hist = run(tmp_path / "whole.safetensors")
    run(tmp_path / "split.safetensors", stop_after=2)
    # Different seeds everywhere: everything that matters must come from the checkpoint.
    resumed, resumed_opt, resumed_hist = run(tmp_path / "split.safetensors", seed=7, loader_seed=8)

    expected, got = whole.state_dict(), resumed.state_dict()
    assert sorted(expected) == sorted(got)
    for key in expected:
        assert np.array_equal(expected[key], got[key]), key
    for index, entries in whole_opt.state_dict()["state"].items():
        other = resumed_opt.state_dict()["state"][index]
        assert np.array_equal(entries["momentum_buffer"], other["momentum_buffer"])
    assert resumed_hist.epochs == [1, 2, 3]
    for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert getattr(resumed_hist, name) == getattr(whole_hist, name), name
    # Both runs leave the shared default generator in the same state too.
    assert whole_opt.param_groups[0]["lr"] == resumed_opt.param_groups[0]["lr"]


def test_resume_does_not_repeat_dropout_masks_without_its_generator(tmp_path):
    # Control for the test above: without restoring the Dropout stream the
    # resumed run differs, so the equality there is not an accident.
    path = tmp_path / "c.safetensors"
    model, opt, sched, loader = setup()
    xcnn.fit(model, nn.CrossEntropyLoss(), opt, loader, 1, None, sched, path, progress=False)
    state_after_2 = None
    for generator_restored in (True, False):
        model, opt, sched, loader = setup(seed=5, loader_seed=6)
        xcnn.load(path, model, opt, sched, loader=loader)
        if not generator_restored:
            model[3].generator.load_state_dict(backends.Generator(123).state_dict())
        xcnn.fit(model, nn.CrossEntropyLoss(), opt, loader, 1, progress=False)
        if state_after_2 is None:
            state_after_2 = model.state_dict()
        else:
            assert not np.array_equal(state_after_2["1.weight"], model.state_dict()["1.weight"])


def test_resume_without_a_checkpoint_file_starts_fresh(tmp_path, capsys):
    model, opt, _sched, loader = setup()
    path = tmp_path / "new.safetensors"
    hist = xcnn.fit(
        model, nn.CrossEntropyLoss(), opt, loader, 1, checkpoint=path, resume=True, progress=False
    )
    assert hist.epochs == [1] and path.is_file()
    # Resuming a finished run trains no more epochs.
    again = xcnn.fit(
        model, nn.CrossEntropyLoss(), opt, loader, 1, checkpoint=path, resume=True, verbose=True
    )
    assert again.epochs == [1]
    assert capsys.readouterr().out == f"resumed from {path} after epoch 1\n"


def test_checkpoint_of_a_wrapped_model_holds_the_plain_model(tmp_path):
    from xcnn.distributed import DistributedDataParallel

    model, opt, sched, loader = setup()
    path = tmp_path / "wrapped.safetensors"
    wrapped = DistributedDataParallel(model)  # a world of one here
    xcnn.fit(wrapped, nn.CrossEntropyLoss(), opt, loader, 1, None, sched, path, progress=False)
    plain = mlp(5)
    assert xcnn.load(path, plain)["epoch"] == 1  # plain keys: loads without the wrapper
    for key, value in model.state_dict().items():
        assert np.array_equal(plain.state_dict()[key], value), key
    # ... and resumes into a wrapper again.
    model, opt, sched, loader = setup(seed=3)
    hist = xcnn.fit(
        DistributedDataParallel(model), nn.CrossEntropyLoss(), opt, loader, 2, None, sched, path,
        progress=False, resume=True,
    )  # fmt: skip
    assert hist.epochs == [1, 2]


def test_callback_can_stop_training():
    model, opt, _sched, loader = setup()
    calls = []

    def stop_at_two(epoch, history):
        calls.append((epoch, len(history)))
        return epoch == 2

    hist = xcnn.fit(
        model, nn.CrossEntropyLoss(), opt, loader, 5, progress=False, callbacks=[stop_at_two]
    )
    assert hist.epochs == [1, 2] and calls == [(1, 1), (2, 2)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"epochs": 1.5}, "epochs must be a positive integer"),
        ({"log_interval": 0}, "log_interval must be a positive integer"),
        ({"resume": True}, "resume=True needs checkpoint"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, match):
    model, opt, _sched, loader = setup()
    args = {"epochs": 1, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        xcnn.fit(model, nn.CrossEntropyLoss(), opt, loader, **args)


def test_fit_on_an_empty_loader_is_an_error():
    model, opt, _sched, _loader = setup()
    with pytest.raises(ValueError, match="training loader yielded no batches in epoch 1"):
        xcnn.fit(model, nn.CrossEntropyLoss(), opt, [], 1, progress=False)


def test_plot_history_writes_a_png(tmp_path):
    hist = History.from_dict(
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
    path = xcnn.plot_history(hist, tmp_path / "history.png")
    png = path.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1000, 400)
    assert len(png) > 10_000  # two panels with lines and text, not an empty canvas
    assert os.listdir(tmp_path) == ["history.png"]
    # A dict works too, and missing validation values are simply not drawn.
    no_val = hist.to_dict() | {"val_loss": [None] * 3, "val_accuracy": [None] * 3}
    assert xcnn.plot_history(no_val, tmp_path / "b.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="no epochs"):
        xcnn.plot_history(History(), tmp_path / "empty.png")


def test_plot_history_without_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'xcnn\[plot\]'"):
        xcnn.plot_history(History(), tmp_path / "x.png")


# -- under N ranks --------------------------------------------------------------------


def mpiexec_or_skip() -> str:
    """The ``mpiexec`` that goes with this interpreter's mpi4py; skip (saying why) without one."""
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed: pip install 'xcnn[mpi]' (nox's tests-numpy does)")
    local = Path(sys.executable).with_name("mpiexec")
    found = str(local) if local.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip(f"no mpiexec next to {sys.executable} or on PATH: pip install mpich")
    return found


def launch(ranks: int, *args: str) -> subprocess.CompletedProcess:
    """This file run as a program on ``ranks`` MPI ranks."""
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    env["XCNN_DIST_TIMEOUT"] = "60"  # a hang fails the test instead of stalling it
    env.pop("XCNN_BACKEND", None)
    command = [mpiexec_or_skip(), "-n", str(ranks), sys.executable, __file__, *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)


class MeanGradientSGD(optim.SGD):
    """SGD that averages each gradient over the ranks before stepping.

    A stand-in for DistributedDataParallel, so that these tests check fit alone.
    """

    def step(self):
        import xcnn.distributed as dist

        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    dist.all_reduce(param.grad, op="mean")
        super().step()


class NanOnRank(NanAfter):
    """NanAfter on one rank only; the others' losses stay finite."""

    def __init__(self, rank: int, bad: int):
        import xcnn.distributed as dist

        super().__init__(bad if dist.rank() == rank else 10**9)


def distributed_run(path, epochs, batch_size, sgd, stop_after=None, seed=0, loader_seed=1):
    """The run that test_fit_on_two_ranks does on 2 ranks and on one process."""
    xcnn.manual_seed(seed)
    model = mlp(seed, p=0.0)  # dropout would draw different masks for a batch of 8 and of 16
    opt = sgd(model.parameters(), lr=0.05, momentum=0.9)
    sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    loader = data.DataLoader(blobs(), batch_size, shuffle=True, seed=loader_seed)
    val = data.DataLoader(blobs(21, seed=5), 4, even_shards=False)
    hist = xcnn.fit(
        model, nn.CrossEntropyLoss(), opt, loader, stop_after or epochs, val, sched,
        checkpoint=path, resume=path is not None, progress=False, verbose=True, log_interval=2,
        history_path=None if path is None else Path(path).with_suffix(".csv"),
    )  # fmt: skip
    return model, hist


def on_ranks(out: Path) -> None:
    """What every rank runs; rank r writes ``out/r.json`` and ``out/r.npz``."""
    import xcnn.distributed as dist

    dist.init()
    xcnn.set_num_threads(1)
    rank, result = dist.rank(), {"world": dist.world_size()}
    whole, hist = distributed_run(out / "whole.safetensors", 3, 8, MeanGradientSGD)
    distributed_run(out / "split.safetensors", 3, 8, MeanGradientSGD, stop_after=2)
    resumed, resumed_hist = distributed_run(
        out / "split.safetensors", 3, 8, MeanGradientSGD, seed=7, loader_seed=8
    )
    result["history"], result["resumed_history"] = hist.to_dict(), resumed_hist.to_dict()
    val = data.DataLoader(blobs(21, seed=5), 4, even_shards=False)  # ranks: 11 and 10 images
    result["evaluate"] = xcnn.evaluate(mlp(3, p=0.0), val, nn.CrossEntropyLoss())  # untrained
    result["val_batches"] = len(val)
    model = mlp(0, p=0.0)
    opt = MeanGradientSGD(model.parameters(), lr=0.05)
    loader = data.DataLoader(blobs(), 8, shuffle=True, seed=1)
    try:
        xcnn.fit(model, NanOnRank(1, bad=3), opt, loader, 1, progress=False, log_interval=2)
    except TrainingDiverged as error:
        result["diverged"] = [error.epoch, error.step, str(error)]
    arrays = {f"whole.{k}": v for k, v in whole.state_dict().items()}
    arrays |= {f"resumed.{k}": v for k, v in resumed.state_dict().items()}
    np.savez(out / f"{rank}.npz", **arrays)
    (out / f"{rank}.json").write_text(json.dumps(result))


def test_fit_on_two_ranks(tmp_path):
    out = launch(2, "--on-ranks", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    # Rank 0 alone prints: 3 + 2 + 1 epoch lines, one resume line.
    assert sum(line.startswith("epoch ") for line in lines) == 6, out.stdout
    assert lines.count(f"resumed from {tmp_path / 'split.safetensors'} after epoch 2") == 1
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    weights = [np.load(tmp_path / f"{r}.npz") for r in range(2)]
    assert ranks[0]["world"] == 2

    # Every rank holds the same History (rank 0's), also after resuming, and the same weights.
    assert ranks[0]["history"] == ranks[1]["history"]
    assert ranks[0]["resumed_history"] == ranks[1]["resumed_history"]
    for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert ranks[0]["resumed_history"][name] == ranks[0]["history"][name], name
    assert sorted(weights[0]) == sorted(weights[1])
    for key in weights[0]:
        assert np.array_equal(weights[0][key], weights[1][key]), key
        if key.startswith("whole."):  # resumed from rank 0's checkpoint, bit for bit
            resumed = weights[0]["resumed." + key.removeprefix("whole.")]
            assert np.array_equal(weights[0][key], resumed), key
    assert (
        xcnn.load(tmp_path / "whole.safetensors", mlp(0, p=0.0))["history"] == ranks[0]["history"]
    )
    assert (tmp_path / "whole.csv").read_text().count("\n") == 4  # rank 0 wrote the history

    # One process with batch 16 sees the same global batches: the same weights up to
    # float32 summation order (the gradient of 16 images is summed in another order).
    single, hist = distributed_run(None, 3, 16, optim.SGD)
    for key, value in single.state_dict().items():
        np.testing.assert_allclose(weights[0]["whole." + key], value, rtol=1e-5, atol=1e-6)
    two = ranks[0]["history"]
    np.testing.assert_allclose(two["train_loss"], hist.train_loss, rtol=1e-5)
    np.testing.assert_allclose(two["val_loss"], hist.val_loss, rtol=1e-5)
    assert two["train_accuracy"] == hist.train_accuracy
    assert two["val_accuracy"] == hist.val_accuracy

    # evaluate sums over uneven shards (11 + 10 of 21 images): each image counted once.
    val = data.DataLoader(blobs(21, seed=5), 4)
    expected = xcnn.evaluate(mlp(3, p=0.0), val, nn.CrossEntropyLoss())
    assert 0.2 < expected["accuracy"] < 0.9  # so that a miscount would show
    assert [r["val_batches"] for r in ranks] == [3, 3]
    for r in ranks:
        assert r["evaluate"]["accuracy"] == expected["accuracy"]
        assert r["evaluate"]["loss"] == pytest.approx(expected["loss"], rel=1e-6)

    # A NaN on rank 1 alone stops both ranks, naming the same step.
    for r in ranks:
        assert r["diverged"][:2] == [1, 3], r["diverged"]
        assert "epoch 1 at step 3 " in r["diverged"][2]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--on-ranks"]:
        on_ranks(Path(sys.argv[2]))


def test_checkpoint_meta_is_saved_every_epoch_and_reserved_names_are_refused(tmp_path):
    model, opt, sched, loader = setup()
    meta = {"classes": ["a", "b", "c"], "input_shape": [1, 4, 4], "normalize": None}
    ckpt = tmp_path / "run.ckpt"
    seen = []

    def after_epoch(epoch, history):
        seen.append(xcnn.io.read_metadata(ckpt))

    xcnn.fit(model, nn.CrossEntropyLoss(), opt, loader, 2, scheduler=sched, checkpoint=ckpt,
             progress=False, callbacks=[after_epoch], checkpoint_meta=meta)  # fmt: skip
    assert [m["epoch"] for m in seen] == [1, 2]
    assert all({k: m[k] for k in meta} == meta for m in seen)
    for name in ("model", "epoch", "history", "xcnn_version"):
        with pytest.raises(
            ValueError, match=rf"checkpoint_meta may not use the names \['{name}'\]"
        ):
            xcnn.fit(model, nn.CrossEntropyLoss(), opt, loader, 1, checkpoint=ckpt,
                     progress=False, checkpoint_meta={name: 1})  # fmt: skip
