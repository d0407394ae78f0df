"""The compiled training loop: many batches per call, and the optimizer updates.

Python hands over the epoch's sample order and a range of batch numbers; everything between
two progress-bar updates — gather, forward, backward, update — runs here without returning.

Threads split each batch into ``n_parts`` contiguous parts: each computes its part's share
of the gradient in its own workspace (one row of every 2-D buffer), then the update sums the
shares in a fixed order. One fork-join per batch, whatever the network's depth, so a busy
machine that delays a thread costs little; and the same thread count gives the same bits.
"""

import math

import numpy as np
from numba import njit, prange

from .backprop import batch_gradients, view2d
from .costs import BINARY_CROSS_ENTROPY, count_correct

SGD, MOMENTUM, ADAM = 0, 1, 2
CODES = {"sgd": SGD, "momentum": MOMENTUM, "adam": ADAM}


# error_model="numpy": a division is just a division (no zero check and branch per element,
# which kept this loop from vectorizing: Adam's step took 6x longer).
@njit(cache=True, fastmath={"reassoc", "contract", "nsz"}, error_model="numpy")
def update(optimizer, params, grads, n_parts, lr, momentum, nesterov, beta1, beta2, eps, step,
           state1, state2):
    """One optimizer step on the flat parameter vector (same rules as fastmlp.reference).

    Serial on purpose: it is memory-bound, and one fork-join per batch (the gradient parts)
    is cheaper than two. The gradient is the sum of the first ``n_parts`` rows of ``grads``, added into row 0 in
    part order (so the same thread count gives the same bits)."""
    n = params.size
    g = grads[0]
    for part in range(1, n_parts):
        share = grads[part]
        for i in range(n):
            g[i] += share[i]
    if optimizer == SGD:
        for i in range(n):
            params[i] -= lr * g[i]
    elif optimizer == MOMENTUM:
        # v <- μv - ηg;  θ <- θ + v  (Nesterov: θ <- θ + μv - ηg), as scikit-learn.
        for i in range(n):
            v = momentum * state1[i] - lr * g[i]
            state1[i] = v
            if nesterov:
                params[i] += momentum * v - lr * g[i]
            else:
                params[i] += v
    else:
        # Adam with the bias correction folded into the step size (Kingma & Ba, sec. 2).
        t = step + 1
        lr_t = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        for i in range(n):
            m = beta1 * state1[i] + (1 - beta1) * g[i]
            v = beta2 * state2[i] + (1 - beta2) * g[i] * g[i]
            state1[i] = m
            state2[i] = v
            params[i] -= lr_t * m / (math.sqrt(v) + eps)


@njit(cache=True, parallel=True)
def train_batches(params, offsets, sizes, act_codes, cost, X, Y, indptr, indices, data,
                  use_csr, order, batch_size, first_batch, stop_batch, l2, optimizer, lr,
                  momentum, nesterov, beta1, beta2, eps, step, state1, state2, n_parts, acts,
                  act_offsets, xbuf, scratch, sp_indptr, sp_indices, sp_data, ident, delta_a,
                  delta_b, Y_parts, grads, dropout, key):
    """Train on batches ``first_batch .. stop_batch - 1`` of ``order``.

    Workspace arguments are 2-D, one row per part. Returns the summed data cost over those
    samples and how many of them the network classified right before each update. ``step``
    counts updates made before this call (Adam's bias correction needs it)."""
    n_samples = order.size
    n_layers = sizes.size - 1
    n_out = sizes[n_layers]
    costs = np.zeros(n_parts)
    corrects = np.zeros(n_parts, dtype=np.int64)
    for batch in range(first_batch, stop_batch):
        start = batch * batch_size
        rows = order[start:min(start + batch_size, n_samples)]
        n = rows.size
        parts = min(n_parts, n)
        for t in prange(parts):
            lo = t * n // parts
            hi = (t + 1) * n // parts
            part = rows[lo:hi]
            targets = Y_parts[t, :(hi - lo) * n_out].reshape((hi - lo, n_out))
            for r in range(hi - lo):
                for j in range(n_out):
                    targets[r, j] = Y[part[r], j]
            costs[t] += batch_gradients(
                params, offsets, sizes, act_codes, cost, X, part, targets, indptr, indices,
                data, use_csr, l2 if t == 0 else 0.0, acts[t], act_offsets, xbuf[t],
                scratch[t], sp_indptr[t], sp_indices[t], sp_data[t], ident, delta_a[t],
                delta_b[t], grads[t], dropout, key, step, n, lo)
            out = view2d(acts[t], act_offsets[n_layers - 1], hi - lo, n_out)
            corrects[t] += count_correct(out, targets, cost == BINARY_CROSS_ENTROPY)
        update(optimizer, params, grads, parts, lr, momentum, nesterov, beta1, beta2, eps, step,
               state1, state2)
        step += 1
    return costs.sum(), corrects.sum()
