"""The CuPy fast paths' CUDA kernels, run on the CPU (fixture ``cupy_on_cpu``).

``tests-cupy`` runs these kernels on a GPU. On a machine without one they would go
untested, so here each ``cupy.ElementwiseKernel`` body is compiled as plain C++, in
a loop over ``i`` that stands in for CUDA's grid of threads (every thread of an
ElementwiseKernel runs the body once for its own ``i``, independently). A stand-in
``cupy`` module (NumPy, plus that compiler) is put in place while the Python side
of ``ops/_cupy/im2col.py`` and ``ops/_cupy/pool.py`` runs, so their argument order, dtypes and
buffer shapes are exercised as well. The tests that use it (in ``test_im2col.py``
and ``test_pool.py``) compare the results with the standard-only twins.

What this cannot show: launches and device memory, which only the GPU run
exercises, and CUDA's own compiler, which ``test_cuda_kernels_on_cpu.py`` runs on
CuPy's generated source wherever CuPy and NVRTC are installed, GPU or not.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from xcnn.ops._cupy import im2col as _im2col_cupy
from xcnn.ops._cupy import pool as _pool_cupy

CXX = shutil.which("g++") or shutil.which("c++")

# Each kernel source compiled once per session: source -> its C function.
_compiled: dict[str, ctypes._CFuncPtr] = {}

_C_TYPES = {
    "float32": ("float", ctypes.c_float),
    "float64": ("double", ctypes.c_double),
    "int8": ("int8_t", ctypes.c_int8),
    "int16": ("int16_t", ctypes.c_int16),
    "int32": ("int32_t", ctypes.c_int32),
    "int64": ("int64_t", ctypes.c_int64),
}


class _Param:
    """One ElementwiseKernel parameter, e.g. ``raw T img`` or ``int64 H``."""

    def __init__(self, text: str):
        *flags, self.type, self.name = text.split()
        self.raw = "raw" in flags


class CpuElementwiseKernel:
    """``cupy.ElementwiseKernel`` with the body compiled by the host's C++ compiler.

    Covers what xcnn's kernels use: ``raw`` array inputs (read through a flat
    index or a pointer into them, so they must be C-contiguous), scalar inputs, and
    non-raw outputs of one size, each bound to the element ``i`` as CuPy binds it.
    """

    build_dir: Path

    def __init__(self, in_params: str, out_params: str, operation: str, name: str):
        self.inputs = [_Param(p) for p in in_params.split(",")]
        self.outputs = [_Param(p) for p in out_params.split(",")]
        self.operation = operation
        self.name = name

    def __call__(self, *args):
        outs = args[len(self.inputs) :]
        assert len(outs) == len(self.outputs), f"{self.name}: expected every output given"
        typedefs: dict[str, str] = {}
        for param, arg in zip(self.inputs + self.outputs, args, strict=True):
            if param.raw or param in self.outputs:
                assert arg.flags.c_contiguous, f"{self.name}: {param.name} is not C-contiguous"
            if len(param.type) == 1:  # a type placeholder: bound by the arrays given for it
                dtype = str(np.asarray(arg).dtype)
                assert typedefs.setdefault(param.type, dtype) == dtype, (
                    f"{self.name}: {param.type} bound to both {typedefs[param.type]} and {dtype}"
                )
        size = outs[0].size
        assert all(out.size == size for out in outs), f"{self.name}: outputs differ in size"
        function = self._compile(tuple(sorted(typedefs.items())))
        c_args = [ctypes.c_longlong(size)]
        for param, arg in zip(self.inputs + self.outputs, args, strict=True):
            if param.raw or param in self.outputs:
                c_args.append(ctypes.c_void_p(arg.ctypes.data))
            else:
                dtype = typedefs.get(param.type, param.type)
                c_args.append(_C_TYPES[dtype][1](arg))
        function(*c_args)

    def _ctype(self, param: _Param, typedefs: dict[str, str]) -> str:
        return param.type if param.type in typedefs else _C_TYPES[param.type][0]

    def _compile(self, typedefs: tuple[tuple[str, str], ...]):
        bound = dict(typedefs)
        params = ["long long _n"]
        for p in self.inputs:
            ctype = self._ctype(p, bound)
            params.append(f"const {ctype}* {p.name}" if p.raw else f"const {ctype} {p.name}")
        params += [f"{self._ctype(p, bound)}* _raw_{p.name}" for p in self.outputs]
        bind = "".join(
            f"{self._ctype(p, bound)} &{p.name} = _raw_{p.name}[i];\n" for p in self.outputs
        )
        source = "\n".join(
            [
                "#include <cmath>",
                "#include <cstddef>",
                "#include <cstdint>",
                "using std::isnan;",
                *(f"typedef {_C_TYPES[dtype][0]} {name};" for name, dtype in typedefs),
                f'extern "C" void {self.name}({", ".join(params)}) {{',
                "for (ptrdiff_t i = 0; i < _n; ++i) {",
                bind + self.operation,
                "}",
                "}",
            ]
        )
        if source in _compiled:
            return _compiled[source]
        stem = f"{self.name}_{len(_compiled)}"
        cpp = self.build_dir / f"{stem}.cpp"
        library = self.build_dir / f"{stem}.so"
        cpp.write_text(source)
        done = subprocess.run(
            [CXX, "-O1", "-shared", "-fPIC", str(cpp), "-o", str(library)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, f"{self.name} does not compile as C++:\n{done.stderr}"
        function = getattr(ctypes.CDLL(str(library)), self.name)
        function.restype = None
        _compiled[source] = function
        return function


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


@pytest.fixture
def cupy_on_cpu(monkeypatch, kernel_dir):
    """``import cupy`` gives NumPy with CPU-compiled ElementwiseKernels, for this test."""
    if CXX is None:
        pytest.skip("needs a C++ compiler (g++) to run the CUDA kernels' bodies on the CPU")
    CpuElementwiseKernel.build_dir = kernel_dir
    fake = types.ModuleType("cupy")
    fake.__getattr__ = lambda name: getattr(np, name)
    fake.ElementwiseKernel = CpuElementwiseKernel
    monkeypatch.setitem(sys.modules, "cupy", fake)
    # The modules build their kernels once and cache them: not across the stand-in.
    _im2col_cupy._kernels.cache_clear()
    _pool_cupy._kernels.cache_clear()
    yield
    _im2col_cupy._kernels.cache_clear()
    _pool_cupy._kernels.cache_clear()
