"""``kill -9`` during training loses nothing: resumed runs end bit-identical to an unbroken one.

The command users run (``examples/train.py``) trains LeNet-5 on a tiny MNIST
generated into ``tmp_path``. One run goes uninterrupted; the other is killed
with SIGKILL again and again (after seeded random delays, and right when a
checkpoint's temporary file appears, i.e. during a save) and restarted with
``--resume`` each time. After every kill the checkpoint on disk is absent or
loads cleanly (never partial); at the end, the weights and optimizer state in
the final checkpoint equal the unbroken run's bit for bit, and the temporary
files that killed saves left behind are gone (each save removes them).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import xcnn
from xcnn import backends, models

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "examples" / "train.py"
EPOCHS, BATCH, SEED = 10, 16, 3
N_TRAIN, N_TEST = 160, 32
# The kill plan. "delay": a seeded random time after start. "save": the moment the
# checkpoint's temporary file appears (mid-save). "after-save": a seeded random time
# into the epoch after the next checkpoint lands (mid-epoch, and progress is made).
PLAN = ("delay", "save", "after-save", "save", "after-save", "save", "after-save", "save")


def command(data_dir: Path, checkpoint: Path, resume: bool) -> list[str]:
    args = [sys.executable, str(TRAIN), "--dataset", "mnist", "--data-dir", str(data_dir)]
    args += ["--model", "lenet5", "--optimizer", "sgd", "--backend", "numpy", "--no-progress"]
    args += ["--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--seed", str(SEED)]
    args += ["--checkpoint", str(checkpoint)]
    return [*args, "--resume"] if resume else args


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("XCNN_BACKEND", None)
    # One BLAS thread: both runs do the same arithmetic in the same order, and the
    # two cores stay free for the test's own polling.
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def fresh_model():
    return models.lenet5(num_classes=10, in_channels=1, input_size=28, rng=123)


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict, dict[str, np.ndarray]]:
    """(model state via xcnn.load into a fresh model, meta, all raw tensors)."""
    with backends.use("numpy"):
        model = fresh_model()
        meta = xcnn.load(path, model, restore_rng=False)
        state = model.state_dict()
    with safe_open(path, framework="numpy") as handle:
        raw = {k: handle.get_tensor(k) for k in handle.keys()}
    return state, meta, raw


def temp_files(folder: Path, checkpoint: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(f".{checkpoint.name}."))


def wait_for_temp(proc: subprocess.Popen, folder: Path, checkpoint: Path, limit: float) -> bool:
    """Poll until a temporary checkpoint file appears; True if seen while still running.

    A save of this tiny model can fall between two polls. Then the checkpoint is
    replaced without a temporary file having been seen: return False at once, so
    the caller kills early in the next epoch instead of waiting while the run ends.
    """
    end = time.monotonic() + limit
    before = set(temp_files(folder, checkpoint))
    landed = _identity(checkpoint)
    while time.monotonic() < end and proc.poll() is None:
        if set(temp_files(folder, checkpoint)) - before:
            return True
        if _identity(checkpoint) != landed:
            return False
        time.sleep(0.0005)
    return False


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def wait_for_new_checkpoint(proc: subprocess.Popen, checkpoint: Path, limit: float) -> None:
    """Poll until ``checkpoint`` is replaced (a new inode from the atomic rename)."""
    before = _identity(checkpoint)
    end = time.monotonic() + limit
    while time.monotonic() < end and proc.poll() is None:
        if _identity(checkpoint) != before:
            return
        time.sleep(0.002)


def test_kill_9_and_resume_is_bit_exact(tmp_path, write_blob_mnist):
    (tmp_path / "mnist").mkdir()
    sizes = {"train": N_TRAIN, "t10k": N_TEST}
    data_dir = write_blob_mnist(tmp_path / "mnist", sizes, noise=60, brightness=180)
    env = environment()

    # 1. The unbroken reference run.
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    ref_ck = ref_dir / "ck.safetensors"
    start = time.monotonic()
    done = subprocess.run(
        command(data_dir, ref_ck, False), env=env, capture_output=True, text=True, timeout=120
    )
    reference_seconds = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert "test accuracy:" in done.stdout
    trained = float(done.stdout.split("trained in ")[1].split(" s")[0])
    epoch_seconds = max(trained / EPOCHS, 0.05)
    ref_state, ref_meta, ref_raw = load_checkpoint(ref_ck)
    assert ref_meta["epoch"] == EPOCHS

    # 2. The same run, killed over and over, resumed each time.
    run_dir = tmp_path / "killed"
    run_dir.mkdir()
    ck = run_dir / "ck.safetensors"
    rng = random.Random(20240611)
    kills, saves_hit, resumed_epochs = 0, 0, []
    for attempt, mode in enumerate(PLAN):
        proc = subprocess.Popen(
            command(data_dir, ck, resume=attempt > 0),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            hit = False
            if mode == "save":
                hit = wait_for_temp(proc, run_dir, ck, limit=reference_seconds * 2)
            elif mode == "after-save":
                wait_for_new_checkpoint(proc, ck, limit=reference_seconds * 2)
                time.sleep(rng.uniform(0.1, 0.8) * epoch_seconds)
            else:
                # Past the start-up (imports, data), then early in training: late
                # enough to land mid-epoch, early enough to leave epochs for the rest.
                startup = max(0.0, reference_seconds - trained)
                time.sleep(startup + rng.uniform(0.05, 0.4) * trained)
            still_running = proc.poll() is None
            if still_running:
                os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
            if proc.stderr is not None:
                err = proc.stderr.read().decode(errors="replace")
                proc.stderr.close()
        if proc.returncode != -signal.SIGKILL:
            # It ended on its own: before the poll, or between the poll and the kill
            # (a kill sent as the process exits finds nothing to kill).
            assert proc.returncode == 0, f"run {attempt} failed on its own:\n{err}"
            break
        kills += 1
        # Killed mid-save: the temporary file is still there, the checkpoint is not partial.
        saves_hit += hit and bool(temp_files(run_dir, ck))
        if ck.exists():
            _, meta, _ = load_checkpoint(ck)  # raises if partial or corrupt
            assert 1 <= meta["epoch"] <= EPOCHS
            resumed_epochs.append(meta["epoch"])
        else:
            resumed_epochs.append(0)

    # 3. Finish: resume until the run completes (leftover temp files must not matter).
    for _ in range(EPOCHS + 1):
        done = subprocess.run(
            command(data_dir, ck, True), env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        if "test accuracy:" in done.stdout:
            break
    state, meta, raw = load_checkpoint(ck)
    leftovers = temp_files(run_dir, ck)

    assert kills >= 3, f"only {kills} kills landed; the plan needs a slower run"
    assert max(resumed_epochs) >= 1, "no kill happened after a checkpoint existed"
    assert resumed_epochs == sorted(resumed_epochs), "a resumed run went backwards"
    assert meta["epoch"] == EPOCHS and meta["step"] == ref_meta["step"]
    assert sorted(state) == sorted(ref_state)
    for key in ref_state:
        assert state[key].tobytes() == ref_state[key].tobytes(), f"{key} differs from the reference"
    # Optimizer state (SGD momentum buffers) too: the run continues exactly, not just ends close.
    assert sorted(raw) == sorted(ref_raw)
    for key in ref_raw:
        assert raw[key].tobytes() == ref_raw[key].tobytes(), f"{key} differs from the reference"
    assert meta["history"]["train_loss"] == ref_meta["history"]["train_loss"]
    # The final save came after the last kill, and removed what the killed saves left.
    assert leftovers == [], f"temporary files of killed saves piled up: {leftovers}"
    print(
        f"kills: {kills}, during a save: {saves_hit}, epochs on disk at each kill: {resumed_epochs}"
    )
