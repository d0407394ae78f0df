"""One batch through the network: forward, output cost, backward to every layer's gradient.

The first layer reads its samples ``X[rows]`` from a CSR copy of X made once per fit
(``use_csr``), or gathers the dense rows into ``xbuf``. Layer outputs live in one flat
workspace ``acts`` (layer ``l`` from ``act_offsets[l]``, shape ``(n, n_out)``). ``scratch``
holds transposes (a layer's input batch, a weight matrix, a δ), ``sp_*`` the CSR form of the
first layer's input batch transposed, and ``ident`` an ``arange`` long enough to index any
batch or layer.

Layers with fewer than ``NARROW`` outputs (a 10-class output layer) use dot-product forms
(``gemm_nt``): a sweep over so few outputs is too short for gemm to vectorize.
"""

from numba import njit

from .activations import activate, activation_backward, apply_dropout, dropout_backward
from .costs import output_delta
from .dense import (column_sums, csr_rows_transposed, fill_rows, gather_rows, gemm, gemm_nt,
                    scaled_copy, spmm, transpose)

NARROW = 16


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
def scratch_views(scratch, n, sizes, layer):
    """Three disjoint transposes in ``scratch``: the layer's input batch ``(n_in, n)``, its
    weights ``W (n_out, n_in)`` and its δ ``(n_out, n)``."""
    n_in, n_out = sizes[layer], sizes[layer + 1]
    inputs_t = view2d(scratch, 0, n_in, n)
    W = view2d(scratch, n_in * n, n_out, n_in)
    delta_t = view2d(scratch, n_in * n + n_out * n_in, n_out, n)
    return inputs_t, W, delta_t


@njit(cache=True)
def forward_batch(params, offsets, sizes, act_codes, X, rows, indptr, indices, data, use_csr,
                  acts, act_offsets, xbuf, scratch, sp_indptr, sp_indices, sp_data, ident,
                  dropout, key, step, row0):
    """Every layer's output for ``X[rows]``; the last layer is left *before* its activation
    so that the cost can fuse it (softmax + cross-entropy). Returns that last view.

    With ``dropout > 0`` hidden outputs get the dropout mask of ``(key, step)``; ``rows`` are
    rows ``row0 ..`` of the batch."""
    n = rows.size
    n_layers = sizes.size - 1
    Z = view2d(acts, 0, 0, 1)
    for layer in range(n_layers):
        Wt, b = layer_params(params, offsets, sizes, layer)
        prev = Z
        Z = view2d(acts, act_offsets[layer], n, sizes[layer + 1])
        fill_rows(Z, b)
        if layer > 0 and sizes[layer + 1] < NARROW:
            W = scratch_views(scratch, n, sizes, layer)[1]
            transpose(Wt, W)
            gemm_nt(prev, W, Z)
        elif layer > 0:
            gemm(prev, Wt, Z)
        elif use_csr:
            spmm(indptr, indices, data, rows, Wt, Z)
        else:
            x = view2d(xbuf, 0, n, sizes[0])
            gather_rows(X, rows, x)
            gemm(x, Wt, Z)
        if layer < n_layers - 1:
            activate(act_codes[layer], Z)
            if dropout > 0:
                apply_dropout(Z, dropout, key, step, layer, row0)
    return Z


@njit(cache=True)
def batch_gradients(params, offsets, sizes, act_codes, cost, X, rows, Y_batch, indptr,
                    indices, data, use_csr, l2, acts, act_offsets, xbuf, scratch, sp_indptr,
                    sp_indices, sp_data, ident, delta_a, delta_b, grads, dropout, key, step,
                    n_total, row0):
    """Fill ``grads`` (flat, parameter layout) with ∂C/∂θ + l2 θ of the cost of ``X[rows]``
    *divided by n_total*: a batch of ``n_total`` split into parts adds up to its mean cost.

    Returns the summed data cost of these rows."""
    n = rows.size
    n_layers = sizes.size - 1
    out = forward_batch(params, offsets, sizes, act_codes, X, rows, indptr, indices, data,
                        use_csr, acts, act_offsets, xbuf, scratch, sp_indptr, sp_indices,
                        sp_data, ident, dropout, key, step, row0)
    delta = view2d(delta_a, 0, n, sizes[n_layers])
    total = output_delta(cost, act_codes[n_layers - 1], out, Y_batch, n_total, delta)
    spare_is_b = True  # δ sits in delta_a; the next one goes to the other buffer
    for layer in range(n_layers - 1, -1, -1):
        Wt, _ = layer_params(params, offsets, sizes, layer)
        dWt, db = layer_params(grads, offsets, sizes, layer)
        n_in, n_out = sizes[layer], sizes[layer + 1]
        # dWt = Aᵀ δ + l2 Wt, A being the layer's input.
        scaled_copy(dWt, Wt, l2)
        if layer == 0 and use_csr:
            csr_rows_transposed(indptr, indices, data, rows, n_in, sp_indptr, sp_indices,
                                sp_data)
            spmm(sp_indptr, sp_indices, sp_data, ident[:n_in], delta, dWt)
        else:
            if layer == 0:
                prev = view2d(xbuf, 0, n, n_in)
            else:
                prev = view2d(acts, act_offsets[layer - 1], n, n_in)
            prev_t, W, delta_t = scratch_views(scratch, n, sizes, layer)
            transpose(prev, prev_t)
            if n_out < NARROW:
                transpose(delta, delta_t)
                gemm_nt(prev_t, delta_t, dWt)
            else:
                gemm(prev_t, delta, dWt)
        column_sums(delta, db)
        if layer > 0:
            # δ for the layer below: (δ W) ⊙ f'(a), with W = Wtᵀ laid out in scratch.
            transpose(Wt, W)
            upstream = view2d(delta_b if spare_is_b else delta_a, 0, n, n_in)
            upstream[:] = 0
            gemm(delta, W, upstream)
            if dropout > 0:
                dropout_backward(prev, upstream, dropout, key, step, layer - 1, row0)
            activation_backward(act_codes[layer - 1], prev, upstream)
            spare_is_b = not spare_is_b
            delta = upstream
    return total


@njit(cache=True)
def batch_cost(params, offsets, sizes, act_codes, cost, X, rows, Y_batch, indptr, indices,
               data, use_csr, acts, act_offsets, xbuf, scratch, sp_indptr, sp_indices,
               sp_data, ident, delta):
    """The summed data cost of ``X[rows]`` (no gradients); leaves ŷ in the last layer."""
    n = rows.size
    n_layers = sizes.size - 1
    out = forward_batch(params, offsets, sizes, act_codes, X, rows, indptr, indices, data,
                        use_csr, acts, act_offsets, xbuf, scratch, sp_indptr, sp_indices,
                        sp_data, ident, 0.0, 0, 0, 0)
    return output_delta(cost, act_codes[n_layers - 1], out, Y_batch, n,
                        view2d(delta, 0, n, sizes[n_layers]))


@njit(cache=True)
def predict_batch(params, offsets, sizes, act_codes, X, rows, indptr, indices, data, use_csr,
                  acts, act_offsets, xbuf, scratch, sp_indptr, sp_indices, sp_data, ident):
    """ŷ for ``X[rows]``; returns the output view inside ``acts``."""
    out = forward_batch(params, offsets, sizes, act_codes, X, rows, indptr, indices, data,
                        use_csr, acts, act_offsets, xbuf, scratch, sp_indptr, sp_indices,
                        sp_data, ident, 0.0, 0, 0, 0)
    activate(act_codes[sizes.size - 2], out)
    return out
