"""The compiled training loop: many batches per call, and the optimizer updates.

Python hands over the epoch's sample order and a range of batch numbers; everything between
two progress-bar updates — gather, forward, backward, update — runs here without returning.
"""

import math

from numba import njit, prange

from .backprop import batch_gradients, view2d
from .costs import count_correct

SGD, MOMENTUM, ADAM = 0, 1, 2
CODES = {"sgd": SGD, "momentum": MOMENTUM, "adam": ADAM}


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract", "nsz"})
def update(optimizer, params, grads, lr, momentum, nesterov, beta1, beta2, eps, step, state1,
           state2):
    """One optimizer step on the flat parameter vector (same rules as fastmlp.reference)."""
    n = params.size
    if optimizer == SGD:
        for i in prange(n):
            params[i] -= lr * grads[i]
    elif optimizer == MOMENTUM:
        # v <- μv - ηg;  θ <- θ + v  (Nesterov: θ <- θ + μv - ηg), as scikit-learn.
        for i in prange(n):
            v = momentum * state1[i] - lr * grads[i]
            state1[i] = v
            if nesterov:
                params[i] += momentum * v - lr * grads[i]
            else:
                params[i] += v
    else:
        # Adam with the bias correction folded into the step size (Kingma & Ba, sec. 2).
        t = step + 1
        lr_t = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        for i in prange(n):
            g = grads[i]
            m = beta1 * state1[i] + (1 - beta1) * g
            v = beta2 * state2[i] + (1 - beta2) * g * g
            state1[i] = m
            state2[i] = v
            params[i] -= lr_t * m / (math.sqrt(v) + eps)


@njit(cache=True)
def train_batches(params, offsets, sizes, act_codes, cost, X, Y, indptr, indices, data,
                  use_csr, order, batch_size, first_batch, stop_batch, l2, optimizer, lr,
                  momentum, nesterov, beta1, beta2, eps, step, state1, state2, acts,
                  act_offsets, xbuf, scratch, sp_indptr, sp_indices, sp_data, ident, delta_a,
                  delta_b, Y_batch, grads, dropout, key):
    """Train on batches ``first_batch .. stop_batch - 1`` of ``order``.

    Returns the summed data cost over those samples and how many of them the network
    classified right before each update. ``step`` counts updates made before this call
    (Adam's bias correction needs it)."""
    n_samples = order.size
    n_layers = sizes.size - 1
    total = 0.0
    correct = 0
    for batch in range(first_batch, stop_batch):
        start = batch * batch_size
        rows = order[start:min(start + batch_size, n_samples)]
        n = rows.size
        targets = Y_batch[:n]
        for r in range(n):
            targets[r] = Y[rows[r]]
        total += batch_gradients(params, offsets, sizes, act_codes, cost, X, rows, targets,
                                 indptr, indices, data, use_csr, l2, acts, act_offsets,
                                 xbuf, scratch, sp_indptr, sp_indices, sp_data, ident,
                                 delta_a, delta_b, grads, dropout, key, step)
        out = view2d(acts, act_offsets[n_layers - 1], n, sizes[n_layers])
        correct += count_correct(out, targets)
        update(optimizer, params, grads, lr, momentum, nesterov, beta1, beta2, eps, step,
               state1, state2)
        step += 1
    return total, correct
