"""NumPy fast paths: strided views, in-place ufuncs, threads over the batch.

Each module is reached only through its public op's dispatcher (``xcnn/ops/*.py``)
and has a standard-only twin there, tested against it.
"""
