"""One batch through the network: forward, output cost, backward to every layer's gradient.

The first layer reads its samples straight from the data set, ``X[rows]``, either dense or
in CSR form (``use_csr``), so a batch is never copied. Hidden activations live in one flat
workspace ``acts``: layer ``l``'s output occupies ``act_offsets[l]`` onwards, ``(n, n_out)``.
"""

from numba import njit

from .activations import activate, activation_backward
from .costs import output_delta
from .dense import (backward_input, csr_forward, csr_weight_gradient, dense_forward,
                    gathered_forward, gathered_weight_gradient, weight_gradient)


@njit(cache=True)
def layer_params(params, offsets, sizes, layer):
    """Views ``(Wt, b)`` of one layer inside the flat parameter (or gradient) vector."""
    n_in, n_out = sizes[layer], sizes[layer + 1]
    start = offsets[layer]
    mid = start + n_in * n_out
    return params[start:mid].reshape((n_in, n_out)), params[mid:mid + n_out]


@njit(cache=True)
def view2d(buffer, start, rows, cols):
    return buffer[start:start + rows * cols].reshape((rows, cols))


@njit(cache=True)
def forward_batch(params, offsets, sizes, act_codes, X, rows, indptr, indices, data, use_csr,
                  acts, act_offsets):
    """Every layer's output for ``X[rows]``; the last layer is left *before* its activation
    so that the cost can fuse it (softmax + cross-entropy). Returns that last view."""
    n = rows.size
    n_layers = sizes.size - 1
    prev = view2d(acts, 0, 0, 1)  # typed placeholder; layer 0 reads X
    for layer in range(n_layers):
        Wt, b = layer_params(params, offsets, sizes, layer)
        Z = view2d(acts, act_offsets[layer], n, sizes[layer + 1])
        if layer == 0:
            if use_csr:
                csr_forward(indptr, indices, data, rows, Wt, b, Z)
            else:
                gathered_forward(X, rows, Wt, b, Z)
        else:
            dense_forward(prev, Wt, b, Z)
        if layer < n_layers - 1:
            activate(act_codes[layer], Z)
        prev = Z
    return prev


@njit(cache=True)
def batch_gradients(params, offsets, sizes, act_codes, cost, X, rows, Y_batch, indptr,
                    indices, data, use_csr, l2, acts, act_offsets, delta_a, delta_b, grads,
                    n_blocks):
    """Fill ``grads`` (flat, parameter layout) with ∂C/∂θ of the batch's mean cost + L2.

    Returns the batch's *summed* data cost (the mean times the batch size)."""
    n = rows.size
    n_layers = sizes.size - 1
    out = forward_batch(params, offsets, sizes, act_codes, X, rows, indptr, indices, data,
                        use_csr, acts, act_offsets)
    delta = view2d(delta_a, 0, n, sizes[n_layers])
    total = output_delta(cost, act_codes[n_layers - 1], out, Y_batch, n, delta)
    spare_is_b = True  # δ sits in delta_a; the next one goes to the other buffer
    for layer in range(n_layers - 1, -1, -1):
        Wt, _ = layer_params(params, offsets, sizes, layer)
        dWt, db = layer_params(grads, offsets, sizes, layer)
        if layer == 0:
            if use_csr:
                csr_weight_gradient(indptr, indices, data, rows, delta, Wt, l2, dWt, db,
                                    n_blocks)
            else:
                gathered_weight_gradient(X, rows, delta, Wt, l2, dWt, db)
        else:
            prev = view2d(acts, act_offsets[layer - 1], n, sizes[layer])
            weight_gradient(prev, delta, Wt, l2, dWt, db)
            upstream = view2d(delta_b if spare_is_b else delta_a, 0, n, sizes[layer])
            backward_input(delta, Wt, upstream)
            activation_backward(act_codes[layer - 1], prev, upstream)
            spare_is_b = not spare_is_b
            delta = upstream
    return total


@njit(cache=True)
def batch_cost(params, offsets, sizes, act_codes, cost, X, rows, Y_batch, indptr, indices,
               data, use_csr, acts, act_offsets, scratch):
    """The summed data cost of ``X[rows]`` (no gradients); leaves ŷ in the last layer."""
    n = rows.size
    n_layers = sizes.size - 1
    out = forward_batch(params, offsets, sizes, act_codes, X, rows, indptr, indices, data,
                        use_csr, acts, act_offsets)
    delta = view2d(scratch, 0, n, sizes[n_layers])
    return output_delta(cost, act_codes[n_layers - 1], out, Y_batch, n, delta)


@njit(cache=True)
def predict_batch(params, offsets, sizes, act_codes, X, rows, indptr, indices, data, use_csr,
                  acts, act_offsets):
    """ŷ for ``X[rows]``; returns the output view inside ``acts``."""
    out = forward_batch(params, offsets, sizes, act_codes, X, rows, indptr, indices, data,
                        use_csr, acts, act_offsets)
    activate(act_codes[sizes.size - 2], out)
    return out
