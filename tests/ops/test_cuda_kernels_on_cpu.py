"""The CUDA kernels' checks without a GPU: the CPU harness itself, and NVRTC compilation.

The kernels' results against the twins are in ``test_im2col.py`` and ``test_pool.py``,
run through the ``cupy_on_cpu`` harness of ``tests/ops/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xcnn.ops import im2col, standard_only
from xcnn.ops._cupy import im2col as _im2col_cupy
from xcnn.ops._cupy import pool as _pool_cupy
from xcnn.ops._geometry import geometry


def test_a_wrong_kernel_is_caught(cupy_on_cpu, monkeypatch):
    """The harness runs the real body: an off-by-one in it fails the comparison."""
    wrong = _im2col_cupy._IM2COL_BODY.replace("- PW;", "- PW + 1;")
    assert wrong != _im2col_cupy._IM2COL_BODY
    monkeypatch.setattr(_im2col_cupy, "_IM2COL_BODY", wrong)
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 6)).astype(np.float32)
    g = geometry("im2col", x.shape, (3, 3), (1, 1), (1, 1), (1, 1))
    with standard_only():
        expected = im2col(x, 3, 1, 1)
    assert not np.array_equal(_im2col_cupy.im2col(x, g), expected)


def test_kernels_compile_with_nvrtc():
    """CuPy's own generated source for each kernel compiles with NVRTC (no GPU needed)."""
    cupy = pytest.importorskip("cupy", reason="needs CuPy installed")
    try:
        import cupy._core._kernel as cupy_kernel
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
        generate = cupy_kernel._get_elementwise_kernel_code
    except Exception as error:  # CuPy's internals or a missing NVRTC library
        pytest.skip(f"needs CuPy's kernel generator and NVRTC: {error}")
    include = Path(cupy.__file__).parent / "_core" / "include"
    # compute_75: the oldest architecture that CUDA 12 and 13 both compile for.
    options = [f"-I{include}", "--std=c++17", "-arch=compute_75"]
    ndarray, indexer, scalar = 1, 2, 3  # CuPy's _ArgKind

    def arg_info(param, types_, ndim):
        if param.name == "_ind":
            return cupy_kernel._ArgInfo(indexer, cupy._core._carray.Indexer, None, 1, True, True)
        dtype = np.dtype(types_.get(param.ctype, param.dtype))
        if ndim:
            return cupy_kernel._ArgInfo(ndarray, cupy.ndarray, dtype, ndim, True, True)
        return cupy_kernel._ArgInfo(scalar, cupy._core._scalar.CScalar, dtype, 0, True, True)

    im2col_k, col2im_k = _im2col_cupy._kernels()
    forward_k, backward_k = _pool_cupy._kernels()
    cases = []
    for t in ("float32", "float64"):
        cases += [(im2col_k, {"T": t}, {"img": 4, "col": 1})]
        cases += [(col2im_k, {"T": t}, {"col": 3, "img": 1})]
        for s in ("int8", "int32"):
            cases += [(forward_k, {"T": t, "S": s}, {"x": 4, "y": 1, "indices": 1})]
            cases += [(backward_k, {"T": t, "S": s}, {"gy": 4, "indices": 4, "gx": 1})]
    for kernel, types_, ndims in cases:
        infos = tuple(arg_info(p, types_, ndims.get(p.name, 0)) for p in kernel.params)
        type_map = cupy_kernel._TypeMap(tuple((k, np.dtype(v)) for k, v in types_.items()))
        code = generate(infos, type_map, kernel.params, kernel.operation, kernel.name, "")
        program = nvrtc.createProgram("#include <cupy/carray.cuh>\n" + code, "k.cu", [], [])
        try:
            nvrtc.compileProgram(program, options)
        except nvrtc.NVRTCError:
            pytest.fail(f"{kernel.name} {types_}:\n{nvrtc.getProgramLog(program)}")
        finally:
            nvrtc.destroyProgram(program)
