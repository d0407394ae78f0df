"""Inference: the forward pass over many rows.

The rows are worked through in blocks (the workspace's size), each block's layers split
between threads (:mod:`.threads`); dense rows are read in place (no copy of X), and a block
that is sparse enough goes in through a CSR block built in the workspace
(:func:`fastmlp.kernels.backprop.first_input`). A block too small to share (a one-sample
prediction) runs on the calling thread alone: waking a thread pool costs more than that.
"""

from numba import njit

from .backprop import infer as infer_block


@njit(cache=True)
def infer(params, table, cost, inp, Y, sample_weight, index, out, ws, block, mode, threads):
    """``out <- ŷ`` for every row of the input, in blocks of ``block`` rows; with targets
    ``Y`` (else an empty ``(0, n_out)`` array) returns their summed data cost, weighted by
    ``sample_weight`` when it is not empty. ``index`` is ``arange(n)``; each block's work is
    split between ``threads``. ``mode`` is ``layout.PREDICT``, or ``BATCH_STATS`` (BatchNorm
    normalises each block with its own statistics: give one block of all rows)."""
    n, n_out = out.shape
    total = 0.0
    for start in range(0, n, block):
        stop = min(n, start + block)
        Y_block = Y[start:stop] if Y.shape[0] else Y
        w_block = sample_weight[start:stop] if sample_weight.size else sample_weight
        res, cost_sum = infer_block(params, table, cost, inp, index[start:stop], Y_block,
                                    w_block, ws, mode, threads)
        total += cost_sum
        for r in range(stop - start):
            for j in range(n_out):
                out[start + r, j] = res[r, j]
    return total
