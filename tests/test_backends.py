"""The backend selector: names, lazy env reading, scoped override, RNG, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import xcnn
from xcnn import backends


def test_default_is_numpy(monkeypatch):
    monkeypatch.delenv("XCNN_BACKEND", raising=False)
    b = backends.current()
    assert b.name == "numpy"
    assert "numpy" in b.xp.__name__
    assert backends.available()[0] == "numpy"


def test_env_is_read_lazily_and_case_insensitively(monkeypatch):
    monkeypatch.setenv("XCNN_BACKEND", " NumPy ")
    assert backends.current().name == "numpy"
    monkeypatch.setenv("XCNN_BACKEND", "array_api_strict")
    assert backends.current().name == "array_api_strict"


def test_unknown_backend_names_the_choices(monkeypatch):
    monkeypatch.setenv("XCNN_BACKEND", "tensorflow")
    with pytest.raises(ValueError, match=r"'tensorflow'.*'numpy', 'cupy'"):
        backends.current()
    with pytest.raises(ValueError, match="valid choices"):
        backends.use("jax")


def test_unknown_backend_fails_at_first_use_not_import():
    code = "import os; os.environ['XCNN_BACKEND']='tensorflow'; import xcnn; print('imported')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "imported" in out.stdout


def test_import_never_imports_cupy():
    code = "import sys, xcnn, xcnn.backends; xcnn.backends.current(); print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_use_is_scoped_and_restores(monkeypatch):
    monkeypatch.delenv("XCNN_BACKEND", raising=False)
    with backends.use("array_api_strict") as b:
        assert b.name == "array_api_strict"
        assert backends.current() is b
        with backends.use("numpy"):
            assert backends.current().name == "numpy"
        assert backends.current().name == "array_api_strict"
    assert backends.current().name == "numpy"


def test_use_as_plain_call_overrides_env(monkeypatch):
    monkeypatch.setenv("XCNN_BACKEND", "numpy")
    scope = backends.use("array_api_strict")
    try:
        assert backends.current().name == "array_api_strict"
    finally:
        scope.__exit__(None, None, None)
    assert backends.current().name == "numpy"


@pytest.mark.parametrize("name", ["numpy", "array_api_strict"])
def test_round_trip_keeps_values_and_dtype(name):
    b = backends.get(name)
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    x = b.asarray(host)
    assert backends.namespace_name(x) == name
    assert x.dtype == b.xp.float32
    back = b.to_numpy(x)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, host)
    assert b.to_numpy(b.asarray(host, dtype="float64")).dtype == np.float64
    b.synchronize()


def _fake_cupy_probe(monkeypatch, probe):
    monkeypatch.setattr(backends, "_cupy_probe", probe)
    monkeypatch.setattr(backends, "_instances", {})


def test_cupy_missing_suggests_the_extra(monkeypatch):
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)
    _fake_cupy_probe(monkeypatch, None)
    monkeypatch.setenv("XCNN_BACKEND", "cupy")
    with pytest.raises(RuntimeError, match=r"xcnn\[cuda12x\]"):
        backends.current()
    assert backends.available() == ["numpy"]


def test_cupy_without_device_includes_cuda_error(monkeypatch):
    import types

    class FakeCudaError(Exception):
        pass

    def no_device():
        raise FakeCudaError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: object())
    _fake_cupy_probe(monkeypatch, None)
    with pytest.raises(RuntimeError, match="cudaErrorNoDevice"):
        backends.use("cupy")
    assert backends.available() == ["numpy"]


def test_manual_seed_gives_same_draws_and_leaves_numpy_global_alone():
    np.random.seed(7)
    expected_global = np.random.random()
    np.random.seed(7)
    a = xcnn.manual_seed(3).random(4)
    b = xcnn.manual_seed(3).random(4)
    np.testing.assert_array_equal(a, b)
    assert np.random.random() == expected_global
    with pytest.raises(ValueError, match="non-negative integer"):
        xcnn.manual_seed(-1)


@pytest.mark.parametrize("name", ["numpy", "array_api_strict"])
def test_generator_uniform_is_seeded_and_restorable(name):
    b = backends.get(name)
    g = backends.Generator(42)
    state = g.state_dict()
    first = b.to_numpy(b.uniform(g, (3, 4), "float32"))
    assert first.dtype == np.float32 and first.shape == (3, 4)
    assert np.all((first >= 0) & (first < 1))
    g.load_state_dict(state)
    np.testing.assert_array_equal(b.to_numpy(b.uniform(g, (3, 4), "float32")), first)
    other = b.to_numpy(b.uniform(backends.Generator(43), (3, 4), "float32"))
    assert not np.array_equal(first, other)


def test_host_rng_rejects_junk():
    with pytest.raises(TypeError, match="rng must be"):
        backends.host_rng("seed")


@pytest.mark.parametrize("name", ["numpy", "array_api_strict"])
def test_zero_d_arrays_keep_their_shape(name):
    b = backends.get(name)
    x = b.asarray(np.array(5, dtype=np.int64))
    assert tuple(x.shape) == ()
    assert int(b.to_numpy(x)) == 5


def test_numpy_asarray_copies():
    host = np.ones(3, dtype=np.float32)
    x = backends.get("numpy").asarray(host)
    x += 1
    assert host[0] == 1.0


@pytest.mark.parametrize("name", ["numpy", "array_api_strict"])
def test_to_host_copies_any_backend_array(name):
    b = backends.get(name)
    x = b.asarray(np.arange(4, dtype=np.float32))
    host = backends.to_host(x)
    assert isinstance(host, np.ndarray) and host.dtype == np.float32
    host[0] = 9.0
    assert float(b.to_numpy(x)[0]) == 0.0  # a copy, not a view
    assert backends.host_dtype(x.dtype) == np.float32


def test_array_namespace_shortcut_agrees_with_array_api_compat():
    import array_api_compat
    import array_api_strict

    plain = np.zeros(3, dtype=np.float32)
    assert backends.array_namespace(plain, plain) is array_api_compat.array_namespace(plain)
    strict = array_api_strict.asarray([1.0])
    assert backends.array_namespace(strict) is array_api_compat.array_namespace(strict)
    with pytest.raises(TypeError):
        backends.array_namespace(plain, strict)  # mixed namespaces are still refused
