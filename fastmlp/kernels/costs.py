"""Cost gradients at the output layer: δᴸ = ∂C/∂zᴸ, and the batch's summed cost."""

import math

from numba import njit

from .activations import EXP, SIGMOID, SOFTMAX, activate, activation_backward

from .._layout import BINARY_CROSS_ENTROPY, CROSS_ENTROPY, MSE, POISSON  # noqa: F401
from .._layout import COST_CODES as CODES  # noqa: F401  (names -> codes)


@njit
def softmax_cross_entropy(Z, Y, w, inv_n, delta):
    """Softmax and cross-entropy fused: A <- softmax(Z) in place, δ = (A - Y)·w·inv_n.

    Returns Σ_rows w_r (-Σ_i y_i log softmax(z)_i), with log-softmax computed from z so that
    it stays finite where a probability underflows to zero. ``w`` holds one weight per row,
    or nothing (every weight 1).
    """
    rows, cols = Z.shape
    total = 0.0
    for r in range(rows):
        f = w[r] if w.size else 1.0
        m = Z[r, 0]
        for j in range(1, cols):
            m = max(m, Z[r, j])
        s = 0.0
        for j in range(cols):
            s += math.exp(Z[r, j] - m)
        log_s = math.log(s)
        row_cost = 0.0
        for j in range(cols):
            log_p = Z[r, j] - m - log_s
            if Y[r, j] != 0:
                row_cost -= Y[r, j] * log_p
            Z[r, j] = math.exp(log_p)
            delta[r, j] = (Z[r, j] - Y[r, j]) * (f * inv_n)
        total += f * row_cost
    return total


@njit
def softplus(x):
    """log(1 + eˣ), without overflow."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@njit(error_model="numpy")  # divisions without per-element zero checks
def sigmoid_binary_cross_entropy(Z, Y, w, inv_n, delta):
    """Sigmoid and binary cross-entropy fused: A <- σ(Z) in place, δ = (A - Y)·w·inv_n.

    Returns Σ w_r Σ -[y log σ(z) + (1-y) log(1-σ(z))] = Σ w_r Σ y softplus(-z) + (1-y)
    softplus(z), finite for any z."""
    rows, cols = Z.shape
    total = 0.0
    for r in range(rows):
        f = w[r] if w.size else 1.0
        for j in range(cols):
            z = Z[r, j]
            y = Y[r, j]
            total += f * (y * softplus(-z) + (1 - y) * softplus(z))
            e = math.exp(-abs(z))
            Z[r, j] = 1 / (1 + e) if z >= 0 else e / (1 + e)
            delta[r, j] = (Z[r, j] - y) * (f * inv_n)
    return total


@njit
def exp_poisson(Z, Y, w, inv_n, delta):
    """Exponential output and half Poisson deviance fused: A <- exp(Z) in place,
    δ = (A - Y)·w·inv_n (the log link is the deviance's canonical link, so the chain rule
    collapses as for softmax + cross-entropy).

    Returns Σ w_r Σ y log(y/ŷ) - y + ŷ = Σ w_r Σ y log y - y z - y + eᶻ (y log y = 0 at
    y = 0): the deviance scikit-learn's ``MLPRegressor(loss="poisson")`` reports, from z so
    that log ŷ is exact. ``w`` holds one weight per row, or nothing (every weight 1)."""
    rows, cols = Z.shape
    total = 0.0
    for r in range(rows):
        f = w[r] if w.size else 1.0
        row_cost = 0.0
        for j in range(cols):
            z = Z[r, j]
            y = Y[r, j]
            e = math.exp(z)
            if y > 0:
                row_cost += y * math.log(y) - y * z - y
            row_cost += e
            Z[r, j] = e
            delta[r, j] = (e - y) * (f * inv_n)
        total += f * row_cost
    return total


@njit
def output_delta(cost, code, Z, Y, w, n, delta):
    """Activate the output layer in place (Z becomes ŷ), fill δᴸ, return the summed cost.

    ``n`` is what the mean cost divides by: the batch size, or with sample weights ``w``
    (one per row; empty for none) the batch's weight sum. The returned sum is weighted.
    """
    rows, cols = Z.shape
    if cost == CROSS_ENTROPY and code == SOFTMAX:
        return softmax_cross_entropy(Z, Y, w, 1.0 / n, delta)
    if cost == BINARY_CROSS_ENTROPY and code == SIGMOID:
        return sigmoid_binary_cross_entropy(Z, Y, w, 1.0 / n, delta)
    if cost == POISSON and code == EXP:
        return exp_poisson(Z, Y, w, 1.0 / n, delta)
    activate(code, Z)
    total = 0.0
    scale = 2.0 / (n * cols)
    for r in range(rows):
        f = w[r] if w.size else 1.0
        for j in range(cols):
            diff = Z[r, j] - Y[r, j]
            total += f * diff * diff
            delta[r, j] = diff * (f * scale)
    activation_backward(code, Z, delta)
    # MSE is a mean over outputs too; callers multiply by n, so return the per-sample sum.
    return total / cols


@njit
def count_correct(out, Y, threshold):
    """How many rows are classified right: the same argmax in ŷ and in the targets (ties:
    first index) or, with ``threshold`` (independent sigmoid outputs), every output on the
    same side of 0.5 as its target."""
    rows, cols = out.shape
    correct = 0
    if threshold:
        for r in range(rows):
            right = True
            for j in range(cols):
                if (out[r, j] > 0.5) != (Y[r, j] > 0.5):
                    right = False
            if right:
                correct += 1
        return correct
    for r in range(rows):
        best_out, best_y = 0, 0
        for j in range(1, cols):
            if out[r, j] > out[r, best_out]:
                best_out = j
            if Y[r, j] > Y[r, best_y]:
                best_y = j
        if best_out == best_y:
            correct += 1
    return correct
