"""Store keys -> paths under the root, refusing every key that could escape it.

Two layers of checks, priced for batches of thousands of keys:

1. **Lexical, per key** (string operations only, well under a microsecond): a key is a str of
   ``/``-separated components; it must not be absolute, contain NUL or a backslash (a path
   separator on Windows and a source of aliasing elsewhere), or have ``..``, ``.`` or empty
   components. Prefixes (listing, ``delete_dir``) may also be ``""`` or end with one ``/``.
2. **Symlinks, per directory**: the directory holding a key is resolved with
   ``os.path.realpath`` and must lie inside the resolved root. Chunk keys share few
   directories (``c/0/...``), so verified directories are cached (bounded) and a 4096-key batch
   costs a handful of ``realpath`` calls. The key's last component can itself be a symlink;
   checking that would cost an ``lstat`` per key, so readers open with ``O_NOFOLLOW`` instead
   and only on ``ELOOP`` call :meth:`KeyResolver.resolve_link`, which follows and checks the link.
   Writes and deletes replace or remove a final symlink itself, never its target.

A symlink that stays inside the root is followed normally. What this does not stop: a
directory swapped for an outside symlink *after* it was verified (a race against a concurrent
attacker with write access to the store); closing that needs ``openat2(RESOLVE_BENEATH)``,
which Python does not expose.
"""

from __future__ import annotations

import os
import threading

from gds_zarr.errors import InvalidKeyError

__all__ = ["KeyResolver", "check_key", "check_prefix"]

_DIR_CACHE_SIZE = 4096


def check_key(key: str) -> str:
    """Check a key lexically and return it.

    Raises
    ------
    InvalidKeyError
        If the key is not a str, is empty or absolute, contains NUL or a backslash, or has an
        empty, ``.`` or ``..`` component.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(repr(key), f"a key must be a str, got {type(key).__name__}")
    if not key:
        raise InvalidKeyError(key, "a key must not be empty")
    if "\x00" in key:
        raise InvalidKeyError(key, "a key must not contain NUL")
    if "\\" in key:
        raise InvalidKeyError(key, "a key must not contain a backslash")
    if key[0] == "/":
        raise InvalidKeyError(key, "a key must be relative to the store root, not absolute")
    wrapped = f"/{key}/"
    if "/../" in wrapped:
        raise InvalidKeyError(key, "a key must not contain '..' components")
    if "/./" in wrapped or "//" in wrapped:
        raise InvalidKeyError(key, "a key must not contain empty or '.' components")
    return key


def check_prefix(prefix: str) -> str:
    """Check a listing/deletion prefix and return it without its trailing ``/``.

    ``""`` (the whole store) is allowed, and one trailing ``/``.

    Raises
    ------
    InvalidKeyError
        As :func:`check_key` for the prefix without its trailing ``/``.
    """
    if prefix == "" or prefix == "/":
        return ""
    stripped = prefix[:-1] if isinstance(prefix, str) and prefix.endswith("/") else prefix
    try:
        return check_key(stripped)
    except InvalidKeyError as e:
        raise InvalidKeyError(prefix, e.reason) from None


class KeyResolver:
    """Resolve checked keys to absolute paths under ``root`` (see the module docstring).

    Parameters
    ----------
    root
        The store's root directory (need not exist yet).
    """

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._real_root: str | None = None
        self._verified: set[str] = set()
        self._lock = threading.Lock()

    @property
    def real_root(self) -> str:
        # Resolved lazily: the root may be created (or be a symlink) after construction.
        if self._real_root is None or not os.path.isdir(self._real_root):
            self._real_root = os.path.realpath(self.root)
        return self._real_root

    def _inside(self, real: str) -> bool:
        root = self.real_root
        return real == root or real.startswith(root + os.sep) or root == os.sep

    def path(self, key: str) -> str:
        """The absolute path of ``key``, after the lexical and directory checks.

        Raises
        ------
        InvalidKeyError
            If the key is malformed or its directory resolves outside the root.
        """
        check_key(key)
        path = f"{self.root}/{key}"
        slash = key.rfind("/")
        if slash >= 0:
            self._check_dir(key, key[:slash])
        return path

    def paths(self, keys: list[str]) -> list[str]:
        """:meth:`path` for many keys, checking each distinct directory once."""
        root = self.root
        out = []
        seen = self._verified
        for key in keys:
            check_key(key)
            slash = key.rfind("/")
            if slash >= 0 and key[:slash] not in seen:
                self._check_dir(key, key[:slash])
            out.append(f"{root}/{key}")
        return out

    def prefix_path(self, prefix: str) -> tuple[str, str]:
        """``(checked prefix without trailing '/', absolute path)`` for a listing prefix."""
        p = check_prefix(prefix)
        if not p:
            return p, self.root
        self._check_dir(prefix, p)
        return p, f"{self.root}/{p}"

    def _check_dir(self, key: str, rel_dir: str) -> None:
        if rel_dir in self._verified:
            return
        real = os.path.realpath(f"{self.root}/{rel_dir}")
        if not self._inside(real):
            raise InvalidKeyError(key, f"{rel_dir!r} resolves outside the store root, to {real!r}")
        with self._lock:
            if len(self._verified) >= _DIR_CACHE_SIZE:
                self._verified.clear()
            self._verified.add(rel_dir)

    def resolve_link(self, path: str) -> str:
        """Follow a final-component symlink at ``path``; its target must be inside the root.

        Raises
        ------
        InvalidKeyError
            If the link resolves outside the root.
        """
        real = os.path.realpath(path)
        if not self._inside(real):
            key = path[len(self.root) + 1 :] if path.startswith(self.root + "/") else path
            raise InvalidKeyError(key, f"symlink resolves outside the store root, to {real!r}")
        return real

    def inside(self, path: str) -> bool:
        """Whether ``path`` (any existing path) resolves inside the root."""
        return self._inside(os.path.realpath(path))
