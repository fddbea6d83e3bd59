"""``cupy_backends.cuda`` of the emulated device."""
