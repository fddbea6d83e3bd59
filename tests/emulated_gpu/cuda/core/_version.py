#: The cuda-core release whose API the stand-in follows (the one dask-cuda 26.10 installs).
__version__ = "1.2.2"
