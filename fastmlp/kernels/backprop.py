"""One batch through the network: forward, output cost, backward to every gradient.

The network is a layer table (:mod:`fastmlp._layout`): the loops here walk its rows and call the
dense, convolution, pooling, batch-normalisation or dropout kernels for each, the products
through :mod:`.threads`, which splits each layer's work between threads. Layer outputs live in one flat workspace ``ws.acts`` (layer
``l`` from ``n · Σ_{k<l} width_k``, shape ``(n, width_l)``); pooling remembers its winners in
``ws.argmax`` the same way.

The first layer reads its samples ``X[rows]`` one of three ways:

* from a CSR matrix given by the caller (``inp.use_csr``: scipy sparse input);
* dense X that is sparse enough (MNIST pixels are ~80 % zeros): the batch's rows are
  compressed into a CSR block in the workspace and multiplied skipping the zeros;
* otherwise the dense rows, gathered into ``ws.xbuf`` (or read in place when the rows are
  consecutive, as in prediction).

Everything here is inlined into its caller (``inline="always"``, at numba's IR level): numba
re-optimizes every compiled function it links into a caller, once per level of calls, so
each level of separately compiled functions between the batch loop and the kernels would
cost another optimization of all of them (cold start: the first run compiles).

Dense layers with fewer than ``NARROW`` outputs (a 10-class output layer) use dot-product
forms (``gemm_nt``): a sweep over so few outputs is too short for gemm to vectorize.
"""

from numba import njit, types
from numba.extending import overload

from .activations import activate, activation_backward, apply_dropout, dropout_backward
from .augment import gather_batch
from .conv import maxpool_backward, maxpool_forward
from .costs import output_delta
from .dense import column_sums, csr_rows_transposed, dense_to_csr, fill_rows, scaled_copy
from .normalize import avgpool_backward, avgpool_forward
from .threads import (convolve, convolve_backward, matmul, matmul_nt, normalize,
                      normalize_backward, sparse_matmul, transposed)
from .._layout import (ACT, AVGPOOL, BATCHNORM, CONV, DENSE, IN_C, IN_H, IN_W, KH,
                       KIND, KW, OUT_C, OUT_H, OUT_W, PARAM, POOL, TRAIN)

NARROW = 16


# --- compile what is used ------------------------------------------------------------------
# A network without image layers has ``ws.conv`` and ``ws.argmax`` set to None, one without
# BatchNorm ``ws.norm``; these calls then compile to nothing, so an MLP never waits for the
# convolution code to compile. (numba types each call for the workspace it gets: the choice
# is made at compile time.)


def _has(ws, field):
    return not isinstance(ws.types[ws.fields.index(field)], types.NoneType)


def conv_layer_forward(prev, W, b, row, Z, ws, threads):
    """``Z <- conv(prev) + b`` (:func:`.threads.convolve`)."""


def conv_layer_backward(prev, W, delta, row, dW, db, upstream, need_dX, ws, threads):
    """The convolution's gradients (:func:`.threads.convolve_backward`)."""


def pool_layer_forward(prev, row, Z, ws, table, layer, n):
    """Max-pooling forward (:func:`.conv.maxpool_forward`), winners kept in ``ws.argmax``."""


def pool_layer_backward(delta, row, upstream, ws, table, layer, n):
    """Max-pooling backward (:func:`.conv.maxpool_backward`)."""


def avgpool_layer_forward(prev, row, Z, ws):
    """Average pooling forward (:func:`.normalize.avgpool_forward`)."""


def avgpool_layer_backward(delta, row, upstream, ws):
    """Average pooling backward (:func:`.normalize.avgpool_backward`)."""


def batchnorm_layer_forward(prev, Z, params, row, mode, ws, table, layer, threads):
    """Batch normalisation forward (:func:`.threads.normalize`), the batch's statistics kept
    in ``ws.norm``."""


def batchnorm_layer_backward(prev, delta, params, grads, row, upstream, ws, table, layer,
                             threads):
    """Batch normalisation backward (:func:`.threads.normalize_backward`)."""


@overload(avgpool_layer_forward)
def _avgpool_layer_forward(prev, row, Z, ws):
    if not _has(ws, "conv"):
        return lambda prev, row, Z, ws: None
    return lambda prev, row, Z, ws: avgpool_forward(prev, row, Z)


@overload(avgpool_layer_backward)
def _avgpool_layer_backward(delta, row, upstream, ws):
    if not _has(ws, "conv"):
        return lambda delta, row, upstream, ws: None
    return lambda delta, row, upstream, ws: avgpool_backward(delta, row, upstream)


@overload(batchnorm_layer_forward)
def _batchnorm_layer_forward(prev, Z, params, row, mode, ws, table, layer, threads):
    if not _has(ws, "norm"):
        return lambda prev, Z, params, row, mode, ws, table, layer, threads: None
    return lambda prev, Z, params, row, mode, ws, table, layer, threads: normalize(
        prev, Z, params, row, mode, norm_stats(ws, table, layer), threads)


@overload(batchnorm_layer_backward)
def _batchnorm_layer_backward(prev, delta, params, grads, row, upstream, ws, table, layer,
                              threads):
    if not _has(ws, "norm"):
        return lambda prev, delta, params, grads, row, upstream, ws, table, layer, threads: \
            None

    def impl(prev, delta, params, grads, row, upstream, ws, table, layer, threads):
        normalize_backward(prev, delta, params, grads, row, norm_stats(ws, table, layer),
                           upstream, threads)
    return impl


@overload(conv_layer_forward)
def _conv_layer_forward(prev, W, b, row, Z, ws, threads):
    if not _has(ws, "conv"):
        return lambda prev, W, b, row, Z, ws, threads: None
    return lambda prev, W, b, row, Z, ws, threads: convolve(prev, W, b, row, Z, ws.conv,
                                                            threads)


@overload(conv_layer_backward)
def _conv_layer_backward(prev, W, delta, row, dW, db, upstream, need_dX, ws, threads):
    if not _has(ws, "conv"):
        return lambda prev, W, delta, row, dW, db, upstream, need_dX, ws, threads: None

    def impl(prev, W, delta, row, dW, db, upstream, need_dX, ws, threads):
        convolve_backward(prev, W, delta, row, dW, db, upstream, need_dX, ws.conv, threads)
    return impl


@overload(pool_layer_forward)
def _pool_layer_forward(prev, row, Z, ws, table, layer, n):
    if not _has(ws, "argmax"):
        return lambda prev, row, Z, ws, table, layer, n: None
    return lambda prev, row, Z, ws, table, layer, n: maxpool_forward(
        prev, row, Z, pool_winners(ws, table, layer, n))


@overload(pool_layer_backward)
def _pool_layer_backward(delta, row, upstream, ws, table, layer, n):
    if not _has(ws, "argmax"):
        return lambda delta, row, upstream, ws, table, layer, n: None
    return lambda delta, row, upstream, ws, table, layer, n: maxpool_backward(
        delta, pool_winners(ws, table, layer, n), row, upstream)


@njit(inline="always")
def view2d(buffer, start, rows, cols):
    return buffer[start:start + rows * cols].reshape((rows, cols))


@njit(inline="always")
def out_width(row):
    return row[OUT_C] * row[OUT_H] * row[OUT_W]


@njit(inline="always")
def in_width(row):
    return row[IN_C] * row[IN_H] * row[IN_W]


@njit(inline="always")
def layer_params(params, row):
    """Views ``(W2d, b)`` of one layer inside the flat parameter (or gradient) vector:
    dense ``Wt (n_in, n_out)``, conv ``W (F, C·kh·kw)``."""
    start = row[PARAM]
    if row[KIND] == CONV:
        rows, cols = row[OUT_C], row[IN_C] * row[KH] * row[KW]
    else:
        rows, cols = in_width(row), row[OUT_C]
    mid = start + rows * cols
    return params[start:mid].reshape((rows, cols)), params[mid:mid + row[OUT_C]]


@njit(inline="always")
def layer_output(ws, table, layer, n):
    """Layer ``layer``'s output ``(n, width)`` inside the workspace."""
    start = 0
    for k in range(layer):
        start += n * out_width(table[k])
    return view2d(ws.acts, start, n, out_width(table[layer]))


@njit(inline="always")
def pool_winners(ws, table, layer, n):
    """Pooling layer ``layer``'s remembered winners ``(n, width)`` (int32)."""
    start = 0
    for k in range(layer):
        if table[k, KIND] == POOL:
            start += n * out_width(table[k])
    return view2d(ws.argmax, start, n, out_width(table[layer]))


@njit(inline="always")
def norm_stats(ws, table, layer):
    """BatchNorm layer ``layer``'s batch statistics in the workspace: mean, then
    ``1/√(σ² + eps)``, one per channel each."""
    start = 0
    for k in range(layer):
        if table[k, KIND] == BATCHNORM:
            start += 2 * table[k, OUT_C]
    return ws.norm[start:start + 2 * table[layer, OUT_C]]


@njit(inline="always")
def first_input(inp, rows, contiguous, ws, table, key, step):
    """The first layer's dense input ``(n, n_in)`` and whether it goes in from CSR instead:
    ``(x, sparse, csr_rows)``. Sparse dense rows are compressed into the workspace's CSR block
    (``csr_rows`` then indexes that block; for caller CSR it is ``rows`` itself). Gathered
    rows are augmented when ``inp.augment`` says so (:mod:`.augment`, random numbers of
    ``(key, step)``)."""
    n = rows.size
    n_in = in_width(table[0])
    x = view2d(ws.xbuf, 0, n, n_in)
    if inp.use_csr:
        return x, True, rows
    if contiguous:
        x = inp.X[rows[0]:rows[0] + n]
    else:
        gather_batch(inp, rows, x, key, step)
    if table[0, KIND] != DENSE or n == 0:
        return x, False, rows
    nonzeros = 0
    for i in range(n):
        for k in range(n_in):
            if x[i, k] != 0:
                nonzeros += 1
    if nonzeros >= inp.sparse_below * n * n_in:
        return x, False, rows
    block = ws.ident[:n]
    dense_to_csr(x, block, ws.csr_indptr, ws.csr_indices, ws.csr_data)
    return x, True, block


@njit(inline="always")
def first_csr(inp, sparse_from_block, ws):
    """``(indptr, indices, data)`` the first layer's CSR rows come from."""
    if sparse_from_block:
        return ws.csr_indptr, ws.csr_indices, ws.csr_data
    return inp.indptr, inp.indices, inp.data


@njit(inline="always")
def forward(params, table, inp, rows, contiguous, ws, rates, key, step, mode, threads):
    """Every layer's output for ``X[rows]`` into the workspace; the last layer is left
    *before* its activation so that the cost can fuse it (softmax + cross-entropy). Returns
    that last view and whether the first layer went in from CSR (see :func:`first_input`).

    ``mode`` (``layout.PREDICT``, ``BATCH_STATS``, ``TRAIN``) says which statistics
    BatchNorm uses and whether it updates its running ones; in TRAIN a layer whose dropout
    rate ``rates[layer]`` is above 0 gets the dropout mask of ``(key, step)``. Each layer's
    work is split between ``threads`` (:mod:`.threads`)."""
    n = rows.size
    n_layers = table.shape[0]
    x, sparse, csr_rows = first_input(inp, rows, contiguous, ws, table, key, step)
    indptr, indices, data = first_csr(inp, sparse and not inp.use_csr, ws)
    prev = x
    for layer in range(n_layers):
        row = table[layer]
        kind = row[KIND]
        Z = layer_output(ws, table, layer, n)
        if kind == DENSE:
            Wt, b = layer_params(params, row)
            fill_rows(Z, b)
            if layer == 0 and sparse:
                sparse_matmul(indptr, indices, data, csr_rows, Wt, Z, Z[:0], 0.0, threads)
            elif row[OUT_C] < NARROW:
                W = view2d(ws.scratch, 0, row[OUT_C], in_width(row))
                transposed(Wt, W, threads)
                matmul_nt(prev, W, Z, Z[:0], 0.0, threads)
            else:
                matmul(prev, Wt, Z, Z[:0], 0.0, threads)
        elif kind == CONV:
            W, b = layer_params(params, row)
            conv_layer_forward(prev, W, b, row, Z, ws, threads)
        elif kind == POOL:
            pool_layer_forward(prev, row, Z, ws, table, layer, n)
        elif kind == AVGPOOL:
            avgpool_layer_forward(prev, row, Z, ws)
        elif kind == BATCHNORM:
            batchnorm_layer_forward(prev, Z, params, row, mode, ws, table, layer, threads)
        else:  # dropout: the mask below, in training
            Z[:] = prev
        if layer < n_layers - 1 and row[ACT] >= 0:
            activate(row[ACT], Z)
        if mode == TRAIN and rates[layer] > 0:
            apply_dropout(Z, rates[layer], key, step, layer, 0)
        prev = Z
    return prev, sparse


@njit(inline="always")
def gradients(params, table, cost, inp, rows, Y_batch, w_batch, weight_sum, l2, ws, grads,
              rates, key, step, mode, threads):
    """Fill ``grads`` (flat, parameter layout) with ∂C/∂θ + l2 θ of the cost of ``X[rows]``
    *divided by weight_sum* (the batch's size, without sample weights: its mean cost).
    ``w_batch`` holds the rows' sample weights, or nothing; ``rates, key, step, mode`` are
    :func:`forward`'s (``mode`` TRAIN or BATCH_STATS).

    Returns the summed (weighted) data cost of these rows."""
    n = rows.size
    n_layers = table.shape[0]
    out, sparse = forward(params, table, inp, rows, False, ws, rates, key, step, mode, threads)
    last = table[n_layers - 1]
    delta = view2d(ws.delta_a, 0, n, out_width(last))
    total = output_delta(cost, last[ACT], out, Y_batch, w_batch, weight_sum, delta)
    spare_is_b = True  # δ sits in delta_a; the next one goes to the other buffer
    for layer in range(n_layers - 1, -1, -1):
        row = table[layer]
        kind = row[KIND]
        n_in = in_width(row)
        if layer > 0:
            prev = layer_output(ws, table, layer - 1, n)
            upstream = view2d(ws.delta_b if spare_is_b else ws.delta_a, 0, n, n_in)
        else:
            prev = view2d(ws.xbuf, 0, n, n_in)
            upstream = view2d(ws.delta_b, 0, 0, n_in)  # the input needs no gradient
        if kind == DENSE:
            Wt, _ = layer_params(params, row)
            dWt, db = layer_params(grads, row)
            n_out = row[OUT_C]
            # dWt = l2 Wt + Aᵀ δ, A being the layer's input (the product starts at l2 Wt).
            if layer == 0 and sparse:
                indptr, indices, data = first_csr(inp, not inp.use_csr, ws)
                csr_rows = rows if inp.use_csr else ws.ident[:n]
                csr_rows_transposed(indptr, indices, data, csr_rows, n_in, ws.sp_indptr,
                                    ws.sp_indices, ws.sp_data)
                sparse_matmul(ws.sp_indptr, ws.sp_indices, ws.sp_data, ws.ident[:n_in], delta,
                              dWt, Wt, l2, threads)
            else:
                prev_t = view2d(ws.scratch, 0, n_in, n)
                transposed(prev, prev_t, threads)
                if n_out < NARROW:
                    delta_t = view2d(ws.scratch, n_in * n, n_out, n)
                    transposed(delta, delta_t, threads)
                    matmul_nt(prev_t, delta_t, dWt, Wt, l2, threads)
                else:
                    matmul(prev_t, delta, dWt, Wt, l2, threads)
            column_sums(delta, db)
            if layer > 0:
                # The layer below's ∂C/∂a = δ W, with W = Wtᵀ laid out in scratch.
                W = view2d(ws.scratch, 0, n_out, n_in)
                transposed(Wt, W, threads)
                upstream[:] = 0
                matmul(delta, W, upstream, upstream[:0], 0.0, threads)
        elif kind == CONV:
            W, _ = layer_params(params, row)
            dW, db = layer_params(grads, row)
            scaled_copy(dW, W, l2)
            db[:] = 0
            conv_layer_backward(prev, W, delta, row, dW, db, upstream, layer > 0, ws, threads)
        elif kind == BATCHNORM:  # (never the first layer: it follows a layer with weights)
            batchnorm_layer_backward(prev, delta, params, grads, row, upstream, ws, table,
                                     layer, threads)
        elif layer > 0:  # (below the first layer nothing needs a gradient)
            if kind == POOL:
                pool_layer_backward(delta, row, upstream, ws, table, layer, n)
            elif kind == AVGPOOL:
                avgpool_layer_backward(delta, row, upstream, ws)
            else:  # dropout: its mask is applied just below, as the layer below's
                upstream[:] = delta
        if layer == 0:
            break
        below = table[layer - 1]
        # δ of the layer below: its ∂C/∂a through its dropout mask and f'(a).
        if mode == TRAIN and rates[layer - 1] > 0:
            dropout_backward(prev, upstream, rates[layer - 1], key, step, layer - 1, 0)
        if below[ACT] >= 0:
            activation_backward(below[ACT], prev, upstream)
        spare_is_b = not spare_is_b
        delta = upstream
    return total


@njit(inline="always")
def infer(params, table, cost, inp, rows, Y_batch, w_batch, ws, mode, threads):
    """ŷ for ``X[rows]`` (consecutive rows) in the workspace; with targets (``Y_batch``
    non-empty) also returns their summed data cost (weighted by ``w_batch`` when that is not
    empty), else 0. Returns ``(ŷ view, cost)``. ``mode``: PREDICT, or BATCH_STATS to
    normalise with these rows' own statistics (no dropout either way)."""
    n = rows.size
    out, _ = forward(params, table, inp, rows, True, ws, ws.grads[:0], 0, 0, mode, threads)
    last = table[table.shape[0] - 1]
    if Y_batch.shape[0] == 0:
        activate(last[ACT], out)
        return out, 0.0
    delta = view2d(ws.delta_a, 0, n, out_width(last))
    return out, output_delta(cost, last[ACT], out, Y_batch, w_batch, n, delta)
