"""Where numba caches the compiled kernels, keyed by the source of every kernel file.

numba invalidates a cached function only when *its own* file changes, but a cached entry point
holds every kernel it calls, linked in: after an edit to ``dense.py`` a cached
``training.train`` would keep running the old ``gemm``. Here the cache of every function in
this package lives in a folder named after a hash of all the kernel sources (and the layer
table's codes in ``fastmlp/_layout.py``, which the kernels compile in as constants), so any
edit starts a fresh cache. The same hash also lets two copies of the same fastmlp — a source
tree and an installed copy, as when the tests run the CLI in a subprocess — share one cache
instead of compiling twice.

The folder is ``$NUMBA_CACHE_DIR/fastmlp-<hash>`` when the user set ``NUMBA_CACHE_DIR``, else
``<user cache dir>/fastmlp/numba-<hash>`` (``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux), else
(not writable) ``__pycache__/fastmlp-<hash>`` beside the kernels.
"""

import hashlib
import os
import sys
from pathlib import Path

from numba.core import caching, config

KERNELS = Path(__file__).resolve().parent
SOURCES = sorted(KERNELS.glob("*.py")) + [KERNELS.parent / "_layout.py"]


def source_hash():
    """sha256 of every kernel source file (name and content), in a fixed order."""
    h = hashlib.sha256()
    for path in SOURCES:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


SOURCE_HASH = source_hash()


def user_cache_root():
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
    elif sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "fastmlp")


def cache_folders():
    """The folders tried for this source hash, first choice first."""
    tag = SOURCE_HASH[:16]
    if config.CACHE_DIR:
        return [os.path.join(config.CACHE_DIR, f"fastmlp-{tag}")]
    return [os.path.join(user_cache_root(), f"numba-{tag}"),
            os.path.join(KERNELS, "__pycache__", f"fastmlp-{tag}")]


class KernelCacheLocator(caching._CacheLocator):
    """numba's cache locator for the functions of ``fastmlp/kernels/*.py``."""

    def __init__(self, py_func, folder):
        self._py_file = py_func.__code__.co_filename
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = folder

    def get_cache_path(self):
        return self._cache_path

    def get_source_stamp(self):
        return SOURCE_HASH

    def get_disambiguator(self):
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file):
        try:
            if Path(py_file).resolve().parent != KERNELS:
                return None  # not ours: numba's own locators decide
        except OSError:
            return None
        for folder in cache_folders():
            self = cls(py_func, folder)
            try:
                self.ensure_cache_path()
            except OSError:
                continue
            return self
        return None


def install():
    """Put :class:`KernelCacheLocator` first in numba's list (once): it answers only for this
    package's files."""
    classes = caching.CacheImpl._locator_classes
    if KernelCacheLocator not in classes:
        classes.insert(0, KernelCacheLocator)
