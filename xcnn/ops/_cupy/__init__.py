"""CuPy fast paths: elementwise CUDA kernels for what the standard lacks.

Each module is reached only through its public op's dispatcher (``xcnn/ops/*.py``)
and has a standard-only twin there, tested against it.
"""
