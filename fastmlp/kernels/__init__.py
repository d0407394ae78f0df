"""Compiled kernels (Numba ``@njit``) only: plain arrays in, no validation, no Python objects.

Layout shared by every kernel:

* A batch is a 2-D array with one sample per row; images travel flattened in ``(C, H, W)``
  order, so the flatten before a dense layer costs nothing.
* The network is a layer table (:mod:`fastmlp._layout`): one int64 row per layer (kind, shapes,
  kernel, stride, padding, parameter offset, activation), walked by the loops in
  :mod:`.backprop`. Adding a layer kind adds a branch there, not a compiled signature.
* The batch loops (:mod:`.training`, :mod:`.inference`) are serial; :mod:`.threads` splits
  each layer's work between threads, and is the only module that knows about them.
* All parameters live in one flat vector. A dense layer stores its weights *transposed*,
  ``Wt (n_in, n_out)``, then its bias: with the input index outermost, ``z += a_k Wt[k]``
  streams a contiguous row, and zero inputs are skipped whole. ``Network.weights[l]`` is
  ``Wt.T``, a view, so the public ``(n_out, n_in)`` layout reads and writes the same memory.
  A conv layer stores ``W (F, C, kh, kw)`` as it is public.
* Gradients and optimizer state use the same flat layout, so an update is one loop.
* Only the entry points that Python calls (``training.train``, ``training.gradient``,
  ``inference.infer``) are cached (``cache=True``): each holds every kernel it calls, linked
  in, and loads from numba's cache without them. Caching the kernels too would make numba
  generate and store machine code for each of them, and again inside every caller: that
  doubled the cold start.
* The cache is keyed by a hash of every kernel source file (:mod:`._cache`): an edit to any
  kernel takes effect on the next run.
"""

from .._threads import use_safe_threading_layer
from ._cache import install as _install_cache_locator

# Before any kernel module is imported (their decorators set up numba's cache): cached code is
# keyed by a hash of every kernel source, so an edited kernel is never run stale (_cache.py).
_install_cache_locator()

# Before any parallel kernel starts numba's thread pool: a thread-safe layer whose idle
# threads sleep (fastmlp._threads.SAFE_LAYER), unless the user chose one.
use_safe_threading_layer()
