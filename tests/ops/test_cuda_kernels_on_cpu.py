"""The CuPy fast paths' CUDA kernels, run on the CPU: their index math against the twins.

``tests-cupy`` runs these kernels on a GPU. On a machine without one they would go
untested, so here each ``cupy.ElementwiseKernel`` body is compiled as plain C++, in
a loop over ``i`` that stands in for CUDA's grid of threads (every thread of an
ElementwiseKernel runs the body once for its own ``i``, independently). A stand-in
``cupy`` module (NumPy, plus that compiler) is put in place while the Python side
of ``_im2col_cupy`` and ``_pool_cupy`` runs, so their argument order, dtypes and
buffer shapes are exercised as well. Results must equal the standard-only twins:
exactly for the gathers and the max-pool (same comparisons, same summation order),
to rounding for col2im.

What this cannot show: launches and device memory, which only the GPU run
exercises, and CUDA's own compiler, which ``test_kernels_compile_with_nvrtc`` runs
on CuPy's generated source wherever CuPy and NVRTC are installed, GPU or not.
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

from xcnn.ops import _im2col_cupy, _pool_cupy, standard_only
from xcnn.ops.im2col import col2im, geometry, im2col
from xcnn.ops.pool import max_pool2d, max_pool2d_backward, pool_geometry

CXX = shutil.which("g++") or shutil.which("c++")

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
    compiled: dict = {}  # noqa: RUF012 (one cache for the session: (source) -> function)

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
        if source in self.compiled:
            return self.compiled[source]
        stem = f"{self.name}_{len(self.compiled)}"
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
        self.compiled[source] = function
        return function


@pytest.fixture(scope="module")
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


def _conv_configs(count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    configs = [
        # LeNet-5's two convolutions and a ResNet 3x3 with stride 2.
        {"shape": (2, 1, 28, 28), "k": (5, 5), "s": (1, 1), "p": (2, 2), "d": (1, 1)},
        {"shape": (2, 6, 14, 14), "k": (5, 5), "s": (1, 1), "p": (0, 0), "d": (1, 1)},
        {"shape": (2, 4, 9, 8), "k": (3, 3), "s": (2, 2), "p": (1, 1), "d": (1, 1)},
    ]
    while len(configs) < count:
        k = tuple(int(v) for v in rng.integers(1, 5, size=2))
        s = tuple(int(v) for v in rng.integers(1, 4, size=2))
        p = tuple(int(v) for v in rng.integers(0, 3, size=2))
        d = tuple(int(v) for v in rng.integers(1, 3, size=2))
        h, w = (int(v) for v in rng.integers(1, 12, size=2))
        if h + 2 * p[0] < d[0] * (k[0] - 1) + 1 or w + 2 * p[1] < d[1] * (k[1] - 1) + 1:
            continue
        n, c = (int(v) for v in rng.integers(1, 4, size=2))
        configs.append({"shape": (n, c, h, w), "k": k, "s": s, "p": p, "d": d})
    return configs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_kernel_equals_the_twin(cupy_on_cpu, dtype):
    rng = np.random.default_rng(0)
    for cfg in _conv_configs(40, seed=1):
        x = rng.standard_normal(cfg["shape"]).astype(dtype)
        g = geometry("im2col", cfg["shape"], cfg["k"], cfg["s"], cfg["p"], cfg["d"])
        with standard_only():
            expected = im2col(x, cfg["k"], cfg["s"], cfg["p"], cfg["d"])
        got = _im2col_cupy.im2col(x, g)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, expected, err_msg=str(cfg))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_col2im_kernel_equals_the_twin(cupy_on_cpu, dtype):
    rng = np.random.default_rng(0)
    for cfg in _conv_configs(40, seed=2):
        n, c = cfg["shape"][:2]
        g = geometry("col2im", cfg["shape"], cfg["k"], cfg["s"], cfg["p"], cfg["d"])
        cols = rng.standard_normal((n, c * g.kh * g.kw, g.oh * g.ow)).astype(dtype)
        with standard_only():
            expected = col2im(cols, cfg["shape"], cfg["k"], cfg["s"], cfg["p"], cfg["d"])
        got = _im2col_cupy.col2im(cols, cfg["shape"], g)
        assert got.dtype == dtype
        tolerance = 1e-6 if dtype == np.float32 else 1e-14
        np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance, err_msg=str(cfg))


def test_col2im_kernel_sums_every_overlapping_tap(cupy_on_cpu):
    # All-ones columns: each pixel gets the number of windows that cover it.
    shape, k, s, p = (1, 1, 5, 5), (3, 3), (1, 1), (1, 1)
    g = geometry("col2im", shape, k, s, p, (1, 1))
    counts = _im2col_cupy.col2im(np.ones((1, 9, 25), np.float64), shape, g)[0, 0]
    expected = np.outer([2, 3, 3, 3, 2], [2, 3, 3, 3, 2])
    np.testing.assert_array_equal(counts, expected)


def _pool_configs(count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    configs = [
        {"shape": (2, 3, 8, 6), "k": (2, 2), "s": (2, 2), "p": (0, 0)},  # LeNet's
        {"shape": (1, 2, 7, 7), "k": (3, 3), "s": (2, 2), "p": (1, 1)},  # ResNet stem's
        {"shape": (1, 1, 13, 13), "k": (12, 12), "s": (1, 1), "p": (0, 0)},  # int32 indices
    ]
    while len(configs) < count:
        kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
        sh, sw = (int(v) for v in rng.integers(1, 4, size=2))
        ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
        h = int(rng.integers(max(kh - 2 * ph, 1), 10))
        w = int(rng.integers(max(kw - 2 * pw, 1), 10))
        n, c = (int(v) for v in rng.integers(1, 4, size=2))
        configs.append({"shape": (n, c, h, w), "k": (kh, kw), "s": (sh, sw), "p": (ph, pw)})
    return configs


def _pool_input(rng: np.random.Generator, shape: tuple, dtype, special: bool) -> np.ndarray:
    if not special:
        return rng.standard_normal(shape).astype(dtype)
    # Ties everywhere, and NaN and infinities where the NaN rule and the padding matter.
    x = rng.integers(-2, 3, size=shape).astype(dtype)
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=max(1, flat.size // 8), replace=False)
    flat[picks] = rng.choice(np.array([np.nan, np.inf, -np.inf], dtype=dtype), size=picks.size)
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("special", [False, True], ids=["random", "ties-nan-inf"])
def test_max_pool_kernels_equal_the_twin(cupy_on_cpu, dtype, special):
    rng = np.random.default_rng(3)
    for cfg in _pool_configs(40, seed=4):
        x = _pool_input(rng, cfg["shape"], dtype, special)
        g = pool_geometry("max_pool2d", cfg["shape"], cfg["k"], cfg["s"], cfg["p"])
        args = (cfg["k"], cfg["s"], cfg["p"])
        with standard_only():
            expected_y, expected_indices = max_pool2d(x, *args, return_indices=True)
        y, indices = _pool_cupy.max_pool2d(x, g)
        assert y.dtype == dtype and indices.dtype == expected_indices.dtype
        np.testing.assert_array_equal(y, expected_y, err_msg=str(cfg))
        np.testing.assert_array_equal(indices, expected_indices, err_msg=str(cfg))

        gy = rng.standard_normal(y.shape).astype(dtype)
        with standard_only():
            expected_gx = max_pool2d_backward(gy, expected_indices, cfg["shape"], *args)
        gx = _pool_cupy.max_pool2d_backward(gy, indices, cfg["shape"], g)
        assert gx.dtype == dtype
        # Overlapping windows add in the twin's order: equal to the last bit.
        np.testing.assert_array_equal(gx, expected_gx, err_msg=str(cfg))


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
