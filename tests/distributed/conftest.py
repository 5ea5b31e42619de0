"""``mpirun``: launch ``programs.py`` under ``mpiexec -n N`` with a time limit.

Tests that need it are SKIPPED, with the reason, where mpi4py or an ``mpiexec``
cannot be found (``pip install 'xcnn[mpi]'`` installs both).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

PROGRAMS = Path(__file__).with_name("programs.py")


def _find_mpiexec() -> str | None:
    # The venv's own bin first: the mpich wheel puts mpiexec next to python.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which("mpiexec", path=path)


def mpi_missing() -> str | None:
    """Why MPI programs cannot be launched here, or None when they can."""
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install 'xcnn[mpi]' installs mpi4py and mpich)"
    if _find_mpiexec() is None:
        return "no mpiexec on PATH (pip install mpich, or apt-get install mpich)"
    return None


@dataclass
class Run:
    returncode: int
    output: str  # stdout and stderr of every rank, mpiexec's and the watcher's
    seconds: float
    tmpdir: Path  # the ranks' TMPDIR: where the watcher keeps its exit markers

    def leftovers(self, patience: float = 10.0) -> list[Path]:
        """What stays in the ranks' TMPDIR. After an MPI_Abort, mpiexec may return before
        the watcher has seen the last rank end and removed its markers: wait a little."""
        deadline = time.monotonic() + patience
        while any(self.tmpdir.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.tmpdir.iterdir())


def _launch(ranks: int, program: str, folder: Path, *args: str, timeout: float, env: dict) -> Run:
    command = [_find_mpiexec(), "-n", str(ranks), sys.executable, str(PROGRAMS), program]
    command += [str(folder), *args]
    tmpdir = folder.with_name(folder.name + "-tmpdir")
    tmpdir.mkdir()
    environment = {**os.environ, "TMPDIR": str(tmpdir), **env}
    start = time.monotonic()
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGINT lets mpiexec stop its ranks; a killed mpiexec would orphan them.
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        pytest.fail(
            f"mpiexec -n {ranks} programs.py {program} still ran after {timeout} s:\n{output}"
        )
    return Run(process.returncode, output, time.monotonic() - start, tmpdir)


@pytest.fixture
def mpirun(tmp_path):
    """``mpirun(ranks, program, *args, timeout=60, env={})`` -> Run; files land in tmp_path."""
    reason = mpi_missing()
    if reason is not None:
        pytest.skip(f"needs MPI: {reason}")

    def run(ranks: int, program: str, *args: str, timeout: float = 60, env=None) -> Run:
        return _launch(ranks, program, tmp_path, *args, timeout=timeout, env=env or {})

    return run
