"""Compiled kernels (Numba ``@njit``) only: plain arrays in, no validation, no Python objects.

Layout shared by every kernel:

* A batch is a 2-D array with one sample per row.
* All parameters live in one flat vector. Layer ``l`` (``n_in = sizes[l]``,
  ``n_out = sizes[l + 1]``) starts at ``offsets[l]``: first its weights *transposed*,
  ``Wt`` of shape ``(n_in, n_out)`` C-order, then its bias ``(n_out,)``. With the input index
  outermost, ``z += a_k Wt[k]`` streams a contiguous row, and zero inputs are skipped whole.
  ``Network.weights[l]`` is ``Wt.T``, a view, so the public ``(n_out, n_in)`` layout reads
  and writes the same memory.
* Gradients and optimizer state use the same flat layout, so an update is one loop.
"""

