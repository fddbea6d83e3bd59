"""``cupy_backends.cuda.api`` of the emulated device."""
