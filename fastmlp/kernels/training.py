"""The compiled batch loop: many batches per call, and the full-data gradient.

Python hands over the epoch's sample order and a range of batch numbers; everything between
two progress-bar updates — gather, forward, backward, update — runs here without returning.
The loop itself is serial: each layer's work inside it is split between threads
(:mod:`.threads`), so the gradient is written once, in place, and the optimizer step is
sliced between threads too. The same seed gives the same bits at any thread count.

Two entry points, each compiled only when first used: :func:`train` (``fit``) and
:func:`gradient` (``Network.gradients``, L-BFGS); prediction is :mod:`.inference`.
"""

from numba import njit

from .backprop import gradients, layer_output, view2d
from .costs import BINARY_CROSS_ENTROPY, count_correct
from .._layout import BATCH_STATS, TRAIN
from .optimizers import ADAM, adam_rate
from .threads import optimizer_step


@njit(inline="always")
def _gather_batch(Y, sample_weight, rows, ws):
    """The batch's targets ``(n, n_out)`` and sample weights (or nothing) in the workspace,
    and its weight sum (its size without weights), summed in float64."""
    n, n_out = rows.size, Y.shape[1]
    targets = view2d(ws.targets, 0, n, n_out)
    for r in range(n):
        for j in range(n_out):
            targets[r, j] = Y[rows[r], j]
    w = ws.weights[:n if sample_weight.size else 0]
    weight_sum = float(n)
    if sample_weight.size:
        weight_sum = 0.0
        for r in range(n):
            w[r] = sample_weight[rows[r]]
            weight_sum += w[r]
    return targets, w, weight_sum


@njit(cache=True)
def train(params, table, cost, inp, Y, sample_weight, order, batch_size, first_batch,
          stop_batch, cfg, step, state1, state2, ws, threads):
    """Batches ``first_batch .. stop_batch - 1`` of ``order``: for each, the gradient of its
    mean cost into ``ws.grads``, then one optimizer step (``cfg``: a ``layout.Settings``).

    Returns the summed (weighted) data cost over those samples and how many of them were
    classified right before each update. ``step`` counts updates made before this call
    (Adam's bias correction and dropout's masks); ``state1``/``state2`` are the optimizer's
    state (see :func:`.optimizers.update`), ``sample_weight`` one weight per sample or
    nothing; each layer's work is split between ``threads``."""
    n_samples = order.size
    n_layers = table.shape[0]
    total = 0.0
    correct = 0
    for batch in range(first_batch, stop_batch):
        start = batch * batch_size
        rows = order[start:min(start + batch_size, n_samples)]
        n = rows.size
        targets, w, weight_sum = _gather_batch(Y, sample_weight, rows, ws)
        l2 = cfg.l2 / weight_sum if cfg.l2_per_weight else cfg.l2
        total += gradients(params, table, cost, inp, rows, targets, w, weight_sum, l2, ws,
                           ws.grads, cfg.rates, cfg.key, step, TRAIN, threads)
        out = layer_output(ws, table, n_layers - 1, n)
        correct += count_correct(out, targets, cost == BINARY_CROSS_ENTROPY)
        rate = adam_rate(cfg.lr, cfg.beta1, cfg.beta2, step) if cfg.optimizer == ADAM \
            else cfg.lr
        optimizer_step(cfg, rate, params, ws.grads, state1, state2, threads)
        step += 1
    return total, correct


@njit(cache=True)
def gradient(params, table, cost, inp, Y, sample_weight, order, chunk, l2, ws, out, threads):
    """``out <-`` the gradient of the mean (weighted) cost over the rows ``order`` plus
    ``l2/2 Σ‖W‖²``, worked through in chunks of ``chunk`` rows (the workspace's size) whose
    gradients are added in order (a network with BatchNorm takes all rows as one chunk: its
    statistics span the batch). Training-mode cost: batch statistics, no dropout. Returns
    the summed (weighted) data cost."""
    n = order.size
    weight_sum = float(n)
    if sample_weight.size:
        weight_sum = 0.0
        for r in range(n):
            weight_sum += sample_weight[order[r]]
    total = 0.0
    for start in range(0, n, chunk):
        rows = order[start:min(n, start + chunk)]
        targets, w, _ = _gather_batch(Y, sample_weight, rows, ws)
        first = start == 0
        total += gradients(params, table, cost, inp, rows, targets, w, weight_sum,
                           l2 if first else 0.0, ws, out if first else ws.grads, out[:0], 0, 0,
                           BATCH_STATS, threads)
        if not first:
            g = ws.grads
            for i in range(out.size):
                out[i] += g[i]
    return total
