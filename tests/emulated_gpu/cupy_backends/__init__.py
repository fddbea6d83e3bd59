"""``cupy_backends`` of the emulated device."""
