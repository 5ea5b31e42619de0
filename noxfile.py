"""Test matrix: ``nox`` runs tests-numpy, tests-cupy and lint.

tests-cupy skips itself (visibly) where no NVIDIA GPU answers. On a GPU machine
without network, run the same suite against an interpreter that already has
CuPy:  ``XCNN_BACKEND=cupy python -m pytest tests``  (or ``nox -s tests-cupy --no-venv``).
"""

from __future__ import annotations

import shutil
import subprocess

import nox

nox.options.sessions = ["tests-numpy", "tests-cupy", "lint"]
nox.options.default_venv_backend = "venv"

# The CPU build of PyTorch, pinned and installed before anything that names
# torch: an unpinned torch pulls gigabytes of CUDA wheels.
TORCH = "torch==2.13.0"
# MPI for the tests that launch mpiexec -n 2 (xcnn.distributed, fit, train.py
# --distributed): mpi4py and the MPICH wheel, which brings its own mpiexec.
MPI = ("mpi4py>=4.1,<5", "mpich>=5,<6")


def _gpu_reason() -> str | None:
    """Why there is no usable NVIDIA GPU here, or None when one answers."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no NVIDIA driver (nvidia-smi not found)"
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"nvidia-smi failed: {error}"
    if out.returncode != 0 or "GPU" not in out.stdout:
        return f"nvidia-smi lists no GPU: {(out.stdout + out.stderr).strip()}"
    return None


@nox.session(name="tests-numpy")
def tests_numpy(session: nox.Session) -> None:
    """The whole suite on NumPy and array_api_strict, with the tests that launch mpiexec."""
    session.install(TORCH)
    session.install(*MPI)
    session.install("-e", ".[test]")
    # The CuPy cases are collected too, so a CPU-only machine shows them as SKIPPED.
    env = {"XCNN_BACKEND": "numpy", "XCNN_TEST_NAMESPACES": "numpy,array_api_strict,cupy"}
    session.run("python", "-m", "pytest", *session.posargs, env=env)


@nox.session(name="tests-cupy")
def tests_cupy(session: nox.Session) -> None:
    """The suite on CuPy; skipped where no NVIDIA GPU answers."""
    reason = _gpu_reason()
    if reason is not None:
        session.skip(f"tests-cupy needs a CUDA GPU: {reason}")
    if session.venv_backend != "none":
        session.install(TORCH)
        session.install("-e", ".[test,cuda13x]")
    env = {"XCNN_BACKEND": "cupy", "XCNN_TEST_NAMESPACES": "cupy"}
    # tests/ only: the docstring examples print NumPy reprs and run in tests-numpy.
    session.run("python", "-m", "pytest", *(session.posargs or ["tests"]), env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
