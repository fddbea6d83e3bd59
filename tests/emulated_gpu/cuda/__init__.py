"""``cuda``: the emulated ``cuda.core`` first, then every other ``cuda.*`` package.

The real ``cuda`` is a namespace package shared by cuda-core, cuda-bindings and
cuda-pathfinder; extending ``__path__`` keeps ``cuda.core`` here ahead of the real one (which
needs a driver through ``cuda.bindings``) and the other ``cuda.*`` packages reachable.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
