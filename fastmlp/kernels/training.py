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

from .backprop import gradients, layer_output
from .inference import infer_range
from .costs import BINARY_CROSS_ENTROPY, count_correct

SGD, MOMENTUM, ADAM = 0, 1, 2
CODES = {"sgd": SGD, "momentum": MOMENTUM, "adam": ADAM}
# Not optimizers: what else run() does (see there).
GRADIENT, INFER = -1, -2


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
    if optimizer == GRADIENT:
        return  # the summed gradient stays in grads[0]
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


@njit(cache=True)
def part_gradients(params, table, cost, inp, Y, sample_weight, part, row0, weight_sum, l2, ws,
                   t, Y_parts, w_parts, grads, cfg, step):
    """Part ``t`` of a batch (rows ``part``, from row ``row0`` of the batch): gather its
    targets and weights, fill ``grads[t]``; returns ``(summed cost, rows classified right)``.

    One compiled function between the parallel loop and the kernels: numba re-optimizes
    everything it links at every level of calls, so the levels are kept few."""
    n, n_out = part.size, Y.shape[1]
    targets = Y_parts[t, :n * n_out].reshape((n, n_out))
    for r in range(n):
        for j in range(n_out):
            targets[r, j] = Y[part[r], j]
    w = w_parts[t, :n if sample_weight.size else 0]
    for r in range(w.size):
        w[r] = sample_weight[part[r]]
    total = gradients(params, table, cost, inp, part, targets, w, weight_sum, l2, ws, t,
                      grads[t], cfg.dropout, cfg.key, step, row0)
    out = layer_output(ws, t, table, table.shape[0] - 1, n)
    return total, count_correct(out, targets, cost == BINARY_CROSS_ENTROPY)


@njit(cache=True, parallel=True)
def run(params, table, cost, inp, Y, sample_weight, order, batch_size, first_batch,
        stop_batch, cfg, step, state1, state2, n_parts, ws, Y_parts, w_parts, grads, out,
        block):
    """The one parallel entry point: train, compute a gradient, or predict.

    * Training (``cfg.optimizer`` a code of ``CODES``): batches ``first_batch ..
      stop_batch - 1`` of ``order``, each split into ``n_parts`` parts whose gradients are
      summed in part order before the update. Returns the summed (weighted) data cost over
      those samples and how many of them were classified right before each update. ``step``
      counts updates made before this call (Adam's bias correction and dropout's masks).
    * ``GRADIENT``: the same for one batch, but the summed gradient is left in ``grads[0]``
      and nothing is updated.
    * ``INFER``: ``out <- ŷ`` for the rows ``order`` (``arange(n)``), one contiguous share
      per part in blocks of ``block`` rows; with targets ``Y`` (else an empty array) the
      summed data cost is returned.

    ``ws`` (a ``layout.Work``), ``Y_parts``, ``w_parts`` and ``grads`` have one row per part;
    ``sample_weight`` holds one weight per sample, or nothing; ``cfg`` is a
    ``layout.Settings``. One compiled function for all three keeps the cold start to one
    compilation of the network code per dtype."""
    costs = np.zeros(n_parts)
    corrects = np.zeros(n_parts, dtype=np.int64)
    if cfg.optimizer == INFER:
        n = out.shape[0]
        for t in prange(n_parts):
            costs[t] = infer_range(params, table, cost, inp, Y, sample_weight, order, out, ws,
                                   t, t * n // n_parts, (t + 1) * n // n_parts, block)
        return costs.sum(), 0
    n_samples = order.size
    weighted = sample_weight.size > 0
    for batch in range(first_batch, stop_batch):
        start = batch * batch_size
        rows = order[start:min(start + batch_size, n_samples)]
        n = rows.size
        parts = min(n_parts, n)
        weight_sum = float(n)
        if weighted:
            weight_sum = 0.0
            for r in range(n):
                weight_sum += sample_weight[rows[r]]
        l2 = cfg.l2 / weight_sum if cfg.l2_per_weight else cfg.l2
        for t in prange(parts):
            lo = t * n // parts
            hi = (t + 1) * n // parts
            c, right = part_gradients(params, table, cost, inp, Y, sample_weight, rows[lo:hi],
                                      lo, weight_sum, l2 if t == 0 else 0.0, ws, t, Y_parts,
                                      w_parts, grads, cfg, step)
            costs[t] += c
            corrects[t] += right
        update(cfg.optimizer, params, grads, parts, cfg.lr, cfg.momentum, cfg.nesterov,
               cfg.beta1, cfg.beta2, cfg.eps, step, state1, state2)
        step += 1
    return costs.sum(), corrects.sum()
