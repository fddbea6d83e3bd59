"""``nvidia``: the emulated ``nvidia.nvcomp`` first, then every other ``nvidia.*`` package.

Real NVIDIA wheels make ``nvidia`` a namespace package, but some install an ``__init__.py`` that
turns it into a regular one, which would hide a namespace folder; extending ``__path__`` keeps
``nvidia.nvcomp`` here ahead of the real one and the other ``nvidia.*`` packages reachable.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
