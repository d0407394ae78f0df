"""Compiled kernels (Numba ``@njit``) only: plain arrays in, no validation, no Python objects.

Layout shared by every kernel:

* A batch is a 2-D array with one sample per row; images travel flattened in ``(C, H, W)``
  order, so the flatten before a dense layer costs nothing.
* The network is a layer table (:mod:`fastmlp._layout`): one int64 row per layer (kind, shapes,
  kernel, stride, padding, parameter offset, activation), walked by the loops in
  :mod:`.backprop`. Adding a layer kind adds a branch there, not a compiled signature.
* All parameters live in one flat vector. A dense layer stores its weights *transposed*,
  ``Wt (n_in, n_out)``, then its bias: with the input index outermost, ``z += a_k Wt[k]``
  streams a contiguous row, and zero inputs are skipped whole. ``Network.weights[l]`` is
  ``Wt.T``, a view, so the public ``(n_out, n_in)`` layout reads and writes the same memory.
  A conv layer stores ``W (F, C, kh, kw)`` as it is public.
* Gradients and optimizer state use the same flat layout, so an update is one loop.
"""

from .._threads import use_quiet_threading_layer

# Before any parallel kernel starts numba's thread pool: a threading layer whose idle
# threads sleep (fastmlp._threads.QUIET_LAYER), unless the user chose one.
use_quiet_threading_layer()
