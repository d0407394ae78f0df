"""Batch normalisation, average pooling and dropout layers (the same math as
:mod:`fastmlp.reference`).

A layer's batch is flat rows ``(n, C·H·W)`` (a dense layer's ``(n, C)``: ``H = W = 1``), so
channel ``c`` of a sample is the columns ``c·HW .. (c+1)·HW`` of its row. Batch statistics
are summed in float64 over the whole batch, a channel at a time: :mod:`.threads` gives each
thread whole channels (``c_lo .. c_hi``), so every channel's sums take the same order, and
give the same bits, at any thread count. The sums may be reassociated (``fastmath``) so that
they vectorize: a strictly ordered float64 sum is one add per 4 cycles, which made BatchNorm
cost as much as the convolution before it.
"""

import math

import numpy as np
from numba import njit

from .._layout import (BN_EPS, BN_MOMENTUM, IN_C, IN_H, IN_W, KH, KW, OUT_C, OUT_H, OUT_W,
                       PARAM, PREDICT, STRIDE, TRAIN)


@njit(inline="always")
def _setting(row, column):
    """A BatchNorm's float setting, kept in the int64 table as its bits."""
    return row[column:column + 1].view(np.float64)[0]


# Reassociated sums (they vectorize); the same code gives the same bits every time. Each
# sample's part of a channel is summed on its own (a 1-D slice, its own accumulator: the form
# LLVM vectorizes, 8x faster than one running sum over a 2-D index), then added in order.
SUMS = {"reassoc", "contract", "nsz"}


@njit(fastmath=SUMS, inline="always")
def _channel_sum(Z, lo, hi):
    """``Σ Z[:, lo:hi]``, in float64."""
    total = 0.0
    for i in range(Z.shape[0]):
        z = Z[i, lo:hi]
        part = 0.0
        for k in range(z.size):
            part += z[k]
        total += part
    return total


@njit(fastmath=SUMS, inline="always")
def _channel_squares(Z, lo, hi, mean):
    """``Σ (Z[:, lo:hi] - mean)²``, in float64."""
    total = 0.0
    for i in range(Z.shape[0]):
        z = Z[i, lo:hi]
        part = 0.0
        for k in range(z.size):
            d = z[k] - mean
            part += d * d
        total += part
    return total


@njit(fastmath=SUMS)
def batchnorm_forward(Z, Y, params, row, mode, stats, c_lo, c_hi):
    """``Y <- γ (Z - μ) / √(σ² + eps) + β`` per channel, ``Z`` being the layer below's
    pre-activation ``(n, C·HW)``.

    ``mode`` PREDICT normalises with the running statistics; otherwise with the batch's mean
    and biased variance, kept in ``stats`` (``μ`` then ``1/√(σ² + eps)``, C each) for the
    backward pass, and TRAIN also moves the running statistics towards them by ``momentum``
    (the variance's unbiased estimate ``σ² m/(m-1)``, m = n·HW values per channel; with one
    value it says nothing and is left). Channels ``c_lo .. c_hi - 1``."""
    C = row[OUT_C]
    p = row[PARAM]
    gamma, beta = params[p:p + C], params[p + C:p + 2 * C]
    run_mean, run_var = params[p + 2 * C:p + 3 * C], params[p + 3 * C:p + 4 * C]
    eps, momentum = _setting(row, BN_EPS), _setting(row, BN_MOMENTUM)
    n = Z.shape[0]
    hw = row[OUT_H] * row[OUT_W]
    m = n * hw
    for c in range(c_lo, c_hi):
        lo, hi = c * hw, (c + 1) * hw
        if mode == PREDICT:
            mean = float(run_mean[c])
            inv = 1.0 / math.sqrt(float(run_var[c]) + eps)
        else:
            mean = _channel_sum(Z, lo, hi) / m
            var = _channel_squares(Z, lo, hi, mean) / m
            inv = 1.0 / math.sqrt(var + eps)
            stats[c], stats[C + c] = mean, inv
            if mode == TRAIN:
                run_mean[c] = (1 - momentum) * run_mean[c] + momentum * mean
                if m > 1:
                    run_var[c] = (1 - momentum) * run_var[c] + momentum * var * m / (m - 1)
        scale = gamma[c] * inv
        shift = beta[c] - mean * scale
        for i in range(n):
            z, y = Z[i, lo:hi], Y[i, lo:hi]
            for k in range(hw):
                y[k] = z[k] * scale + shift


@njit(fastmath=SUMS)
def batchnorm_backward(Z, delta, params, grads, row, stats, dZ, c_lo, c_hi):
    """From ``delta = ∂C/∂Y``: ``∂C/∂β = Σ δ``, ``∂C/∂γ = Σ δ x̂`` and
    ``∂C/∂Z = γ/(m √(σ² + eps)) (m δ - ∂C/∂β - x̂ ∂C/∂γ)`` per channel (``x̂`` the normalised
    input, m the values per channel), with the batch statistics ``stats`` of the forward pass.
    The running statistics' gradient is 0. ``dZ`` may have no rows when the input needs no
    gradient. Channels ``c_lo .. c_hi - 1``."""
    C = row[OUT_C]
    p = row[PARAM]
    gamma = params[p:p + C]
    d_gamma, d_beta = grads[p:p + C], grads[p + C:p + 2 * C]
    grads[p + 2 * C + c_lo:p + 2 * C + c_hi] = 0
    grads[p + 3 * C + c_lo:p + 3 * C + c_hi] = 0
    n = Z.shape[0]
    hw = row[OUT_H] * row[OUT_W]
    m = n * hw
    for c in range(c_lo, c_hi):
        lo, hi = c * hw, (c + 1) * hw
        mean, inv = stats[c], stats[C + c]
        sum_d, sum_dx = 0.0, 0.0
        for i in range(n):
            z, d = Z[i, lo:hi], delta[i, lo:hi]
            part_d, part_dx = 0.0, 0.0
            for k in range(hw):
                part_d += d[k]
                part_dx += d[k] * (z[k] - mean)
            sum_d += part_d
            sum_dx += part_dx
        sum_dx *= inv
        d_beta[c], d_gamma[c] = sum_d, sum_dx
        if dZ.shape[0] == 0:
            continue
        scale = gamma[c] * inv / m
        for i in range(n):
            z, d, out = Z[i, lo:hi], delta[i, lo:hi], dZ[i, lo:hi]
            for k in range(hw):
                x_hat = (z[k] - mean) * inv
                out[k] = scale * (m * d[k] - sum_d - x_hat * sum_dx)


@njit
def avgpool_forward(X, row, Z):
    """``Z[c, i, j] <-`` the mean of its ``kh x kw`` window (no padding)."""
    C, H, W = row[IN_C], row[IN_H], row[IN_W]
    OH, OW, kh, kw, s = row[OUT_H], row[OUT_W], row[KH], row[KW], row[STRIDE]
    share = 1.0 / (kh * kw)
    for r in range(X.shape[0]):
        x = X[r]
        z = Z[r]
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    first = c * H * W + i * s * W + j * s
                    total = 0.0
                    for u in range(kh):
                        at = first + u * W
                        for v in range(kw):
                            total += x[at + v]
                    z[(c * OH + i) * OW + j] = total * share


@njit
def avgpool_backward(delta, row, dX):
    """``dX <- 0``, then each output's δ shared equally among its window's inputs
    (overlapping windows sum)."""
    C, H, W = row[IN_C], row[IN_H], row[IN_W]
    OH, OW, kh, kw, s = row[OUT_H], row[OUT_W], row[KH], row[KW], row[STRIDE]
    share = 1.0 / (kh * kw)
    for r in range(delta.shape[0]):
        d = dX[r]
        d[:] = 0
        e = delta[r]
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    g = e[(c * OH + i) * OW + j] * share
                    first = c * H * W + i * s * W + j * s
                    for u in range(kh):
                        at = first + u * W
                        for v in range(kw):
                            d[at + v] += g
