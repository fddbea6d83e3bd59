"""The emulated counterpart of kvikio's compiled ``kvikio._lib`` (libkvikio + its Cython
bindings), running on the emulated CUDA device of ``tests/emulated_gpu/_emucuda``."""
