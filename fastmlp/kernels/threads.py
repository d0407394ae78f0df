"""The threading policy: how each piece of a batch's work is split between threads.

The batch loop (:mod:`.training`, :mod:`.inference`) is serial; the work *inside* each layer
is split. Every split gives each thread its own slice of the *output* — rows of a product,
filters of a convolution's weight gradient, images of its input gradient, a slice of the
parameter vector for the optimizer step — and each output element is computed by one thread
in the same order whatever the thread count. So a gradient is written once, in place (no
per-thread copy of anything that grows with the parameters), and a seed gives the same bits
at any thread count.

Each split runs the serial kernel directly when one thread would do the whole of it (a
one-sample prediction, a small layer): entering the thread pool costs microseconds, a
10-class output layer's product less. Parts are at least ``MIN_ROWS`` rows (and, for gemm's
register tiles, at least its ``MR`` rows, so that a part takes the same code path as the
whole: the path decides the order of a sum).

This is the only module that knows about threads: the kernels in :mod:`.dense`,
:mod:`.conv`, :mod:`.normalize` and :mod:`.training` take the buffers they work on.
"""

from numba import njit, prange

from .conv import GROUP, conv_forward, conv_input_gradient, conv_weight_gradient
from .dense import MR, gemm, gemm_nt, spmm, transpose
from .normalize import batchnorm_backward, batchnorm_forward
from .optimizers import update
from .._layout import OUT_C

# Rows of a product per thread, at least (and at least gemm's MR: see the module docstring).
MIN_ROWS = max(16, MR)
# Multiply-adds per thread, at least. Back to back, a tbb fork-join costs ~2 µs; in the
# batch loop, where serial work between products lets the workers fall asleep, waking them
# cost ~50 µs per split product (784-128-10 b64: +160 µs per batch at 2 threads for three
# splits), about what 2 M multiply-adds take on one core. Smaller products run on one thread.
MIN_WORK = 1 << 21
# Parameters per thread in the optimizer step, at least: a step over 100 k parameters (~30 µs)
# is faster on one thread than split with a wake-up.
MIN_PARAMS = 1 << 18


@njit
def parts_of(threads, size, least, work=1 << 62):
    """How many of ``threads`` share ``size`` units of work, each taking at least ``least``
    units and, where the caller counts ``work`` (multiply-adds), ``MIN_WORK`` of it.

    (``threads`` comes from the caller, ``numba.get_num_threads()`` read in Python: read in
    compiled code it would keep the code out of numba's cache.)"""
    return max(1, min(threads, size // least, work // MIN_WORK))


# Each product below is ``out (+)= A B`` in some form, with ``base``: an empty array
# (``out[:0]``) to add onto ``out``, or ``base`` itself (the layer's weights) to start ``out``
# at ``scale · base`` — a weight gradient's L2 term, written by the thread that then adds its
# rows' products (a serial pass over every weight would cost as much as the product).


@njit
def _start(out, base, scale, lo, hi):
    if base.shape[0]:
        for i in range(lo, hi):
            for j in range(out.shape[1]):
                out[i, j] = scale * base[i, j]


@njit(parallel=True)
def _gemm_split(A, B, out, base, scale, parts):
    m = A.shape[0]
    for t in prange(parts):
        lo, hi = t * m // parts, (t + 1) * m // parts
        _start(out, base, scale, lo, hi)
        gemm(A[lo:hi], B, out[lo:hi])


@njit
def matmul(A, B, out, base, scale, threads):
    """``out (+)= A B`` (:func:`.dense.gemm`), rows of ``out`` split between threads."""
    parts = parts_of(threads, A.shape[0], MIN_ROWS, A.shape[0] * A.shape[1] * B.shape[1])
    if parts == 1:
        _start(out, base, scale, 0, out.shape[0])
        gemm(A, B, out)
    else:
        _gemm_split(A, B, out, base, scale, parts)


@njit(parallel=True)
def _gemm_nt_split(A, Bt, out, base, scale, parts):
    m = A.shape[0]
    for t in prange(parts):
        lo, hi = t * m // parts, (t + 1) * m // parts
        _start(out, base, scale, lo, hi)
        gemm_nt(A[lo:hi], Bt, out[lo:hi])


@njit
def matmul_nt(A, Bt, out, base, scale, threads):
    """``out (+)= A Btᵀ`` (:func:`.dense.gemm_nt`), rows of ``out`` split between threads."""
    parts = parts_of(threads, A.shape[0], MIN_ROWS, A.shape[0] * A.shape[1] * Bt.shape[0])
    if parts == 1:
        _start(out, base, scale, 0, out.shape[0])
        gemm_nt(A, Bt, out)
    else:
        _gemm_nt_split(A, Bt, out, base, scale, parts)


@njit(parallel=True)
def _spmm_split(indptr, indices, data, rows, B, out, base, scale, parts):
    m = rows.size
    for t in prange(parts):
        lo, hi = t * m // parts, (t + 1) * m // parts
        _start(out, base, scale, lo, hi)
        spmm(indptr, indices, data, rows[lo:hi], B, out[lo:hi])


@njit
def sparse_matmul(indptr, indices, data, rows, B, out, base, scale, threads):
    """``out[i] (+)= Σ_p data[p] · B[indices[p]]`` over CSR row ``rows[i]``
    (:func:`.dense.spmm`), rows of ``out`` split between threads."""
    stored = 0
    for i in range(rows.size):
        stored += indptr[rows[i] + 1] - indptr[rows[i]]
    parts = parts_of(threads, rows.size, MIN_ROWS, stored * B.shape[1])
    if parts == 1:
        _start(out, base, scale, 0, out.shape[0])
        spmm(indptr, indices, data, rows, B, out)
    else:
        _spmm_split(indptr, indices, data, rows, B, out, base, scale, parts)


@njit(parallel=True)
def _transpose_split(A, out, parts):
    m = A.shape[1]
    for t in prange(parts):
        lo, hi = t * m // parts, (t + 1) * m // parts
        transpose(A[:, lo:hi], out[lo:hi])


@njit
def transposed(A, out, threads):
    """``out <- Aᵀ``, rows of ``out`` split between threads (a copy: no sum, any split)."""
    parts = parts_of(threads, A.shape[1], 4 * MIN_ROWS) if A.size >= 65536 else 1
    if parts == 1:
        transpose(A, out)
    else:
        _transpose_split(A, out, parts)


@njit(parallel=True)
def _conv_forward_split(X, W, b, row, Z, work, parts):
    groups = (X.shape[0] + GROUP - 1) // GROUP
    for t in prange(parts):
        # Whole groups of images per thread: a group's product is one gemm.
        lo = min(X.shape[0], t * groups // parts * GROUP)
        hi = min(X.shape[0], (t + 1) * groups // parts * GROUP)
        conv_forward(X[lo:hi], W, b, row, Z[lo:hi], work[t])


@njit
def convolve(X, W, b, row, Z, work, threads):
    """:func:`.conv.conv_forward` with the images split between threads (``work``: one row
    per thread)."""
    parts = min(work.shape[0], parts_of(threads, (X.shape[0] + GROUP - 1) // GROUP, 1))
    if parts == 1:
        conv_forward(X, W, b, row, Z, work[0])
    else:
        _conv_forward_split(X, W, b, row, Z, work, parts)


@njit(parallel=True)
def _conv_weight_split(X, delta, row, dW, db, work, parts):
    F = dW.shape[0]
    for t in prange(parts):
        conv_weight_gradient(X, delta, row, t * F // parts, (t + 1) * F // parts, dW, db,
                             work[t])


@njit(parallel=True)
def _conv_input_split(W, delta, row, dX, work, parts):
    groups = (delta.shape[0] + GROUP - 1) // GROUP
    for t in prange(parts):
        lo = min(delta.shape[0], t * groups // parts * GROUP)
        hi = min(delta.shape[0], (t + 1) * groups // parts * GROUP)
        conv_input_gradient(W, delta[lo:hi], row, dX[lo:hi], work[t])


@njit
def convolve_backward(X, W, delta, row, dW, db, dX, need_dX, work, threads):
    """:func:`.conv.conv_weight_gradient` with the filters split between threads (each
    filter's sum over the batch stays in one thread, in image order), then, with
    ``need_dX``, :func:`.conv.conv_input_gradient` with the images split."""
    F = dW.shape[0]
    parts = min(work.shape[0], parts_of(threads, F, MR))
    if parts == 1:
        conv_weight_gradient(X, delta, row, 0, F, dW, db, work[0])
    else:
        _conv_weight_split(X, delta, row, dW, db, work, parts)
    if not need_dX:
        return
    parts = min(work.shape[0], parts_of(threads, (delta.shape[0] + GROUP - 1) // GROUP, 1))
    if parts == 1:
        conv_input_gradient(W, delta, row, dX, work[0])
    else:
        _conv_input_split(W, delta, row, dX, work, parts)


@njit(parallel=True)
def _update_split(cfg, rate, params, grads, state1, state2, parts):
    n = params.size
    for t in prange(parts):
        update(cfg, rate, params, grads, state1, state2, t * n // parts, (t + 1) * n // parts)


@njit
def optimizer_step(cfg, rate, params, grads, state1, state2, threads):
    """:func:`.optimizers.update` over the whole parameter vector, sliced between threads."""
    parts = parts_of(threads, params.size, MIN_PARAMS)
    if parts == 1:
        update(cfg, rate, params, grads, state1, state2, 0, params.size)
    else:
        _update_split(cfg, rate, params, grads, state1, state2, parts)


# Batch normalisation: each thread takes whole channels (a channel's statistics are sums over
# the whole batch, in one order whatever the thread count).


@njit(parallel=True)
def _normalize_split(Z, Y, params, row, mode, stats, parts):
    C = row[OUT_C]
    for t in prange(parts):
        batchnorm_forward(Z, Y, params, row, mode, stats, t * C // parts, (t + 1) * C // parts)


@njit
def normalize(Z, Y, params, row, mode, stats, threads):
    """:func:`.normalize.batchnorm_forward`, channels split between threads."""
    parts = parts_of(threads, row[OUT_C], 1, 2 * Z.size)
    if parts == 1:
        batchnorm_forward(Z, Y, params, row, mode, stats, 0, row[OUT_C])
    else:
        _normalize_split(Z, Y, params, row, mode, stats, parts)


@njit(parallel=True)
def _normalize_backward_split(Z, delta, params, grads, row, stats, dZ, parts):
    C = row[OUT_C]
    for t in prange(parts):
        batchnorm_backward(Z, delta, params, grads, row, stats, dZ, t * C // parts,
                           (t + 1) * C // parts)


@njit
def normalize_backward(Z, delta, params, grads, row, stats, dZ, threads):
    """:func:`.normalize.batchnorm_backward`, channels split between threads."""
    parts = parts_of(threads, row[OUT_C], 1, 2 * Z.size)
    if parts == 1:
        batchnorm_backward(Z, delta, params, grads, row, stats, dZ, 0, row[OUT_C])
    else:
        _normalize_backward_split(Z, delta, params, grads, row, stats, dZ, parts)
