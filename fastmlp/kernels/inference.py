"""Inference: the forward pass over many rows, split between threads.

Each thread takes a contiguous share of the rows (``training.run`` in its ``INFER`` mode) and
works through it in blocks (one workspace part each), so a 10,000-row prediction costs one
fork-join and no copy of X: dense rows are read in place, and a block that is sparse enough
goes in through a CSR block built in the workspace
(:func:`fastmlp.kernels.backprop.first_input`). A share small enough for one thread runs
:func:`infer_range` directly: waking a thread pool costs more than a one-sample prediction.
"""

from numba import njit

from .backprop import infer


@njit(cache=True)
def infer_range(params, table, cost, inp, Y, sample_weight, index, out, ws, t, lo, hi, block):
    """``out[lo:hi] <- ŷ`` in blocks of ``block`` rows in part ``t`` of ``ws``; with targets
    ``Y`` (else an empty ``(0, n_out)`` array) returns their summed data cost, weighted by
    ``sample_weight`` when it is not empty. ``index`` is ``arange(n)``."""
    n_out = out.shape[1]
    total = 0.0
    for start in range(lo, hi, block):
        stop = min(hi, start + block)
        Y_block = Y[start:stop] if Y.shape[0] else Y
        w_block = sample_weight[start:stop] if sample_weight.size else sample_weight
        res, cost_sum = infer(params, table, cost, inp, index[start:stop], Y_block, w_block,
                              ws, t)
        total += cost_sum
        for r in range(stop - start):
            for j in range(n_out):
                out[start + r, j] = res[r, j]
    return total
