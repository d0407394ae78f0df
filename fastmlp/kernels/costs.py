"""Cost gradients at the output layer: δᴸ = ∂C/∂zᴸ, and the batch's summed cost."""

import math

from numba import njit

from .activations import SOFTMAX, activate, activation_backward

CROSS_ENTROPY, MSE = 0, 1
CODES = {"cross_entropy": CROSS_ENTROPY, "mse": MSE}


@njit(cache=True)
def softmax_cross_entropy(Z, Y, inv_n, delta):
    """Softmax and cross-entropy fused: A <- softmax(Z) in place, δ = (A - Y)·inv_n.

    Returns Σ_rows -Σ_i y_i log softmax(z)_i, with log-softmax computed from z so that it stays
    finite where a probability underflows to zero.
    """
    rows, cols = Z.shape
    total = 0.0
    for r in range(rows):
        m = Z[r, 0]
        for j in range(1, cols):
            m = max(m, Z[r, j])
        s = 0.0
        for j in range(cols):
            s += math.exp(Z[r, j] - m)
        log_s = math.log(s)
        for j in range(cols):
            log_p = Z[r, j] - m - log_s
            if Y[r, j] != 0:
                total -= Y[r, j] * log_p
            Z[r, j] = math.exp(log_p)
            delta[r, j] = (Z[r, j] - Y[r, j]) * inv_n
    return total


@njit(cache=True)
def output_delta(cost, code, Z, Y, n, delta):
    """Activate the output layer in place (Z becomes ŷ), fill δᴸ, return the summed cost.

    ``n`` is the batch size the mean cost divides by.
    """
    rows, cols = Z.shape
    if cost == CROSS_ENTROPY and code == SOFTMAX:
        return softmax_cross_entropy(Z, Y, 1.0 / n, delta)
    activate(code, Z)
    total = 0.0
    scale = 2.0 / (n * cols)
    for r in range(rows):
        for j in range(cols):
            diff = Z[r, j] - Y[r, j]
            total += diff * diff
            delta[r, j] = diff * scale
    activation_backward(code, Z, delta)
    # MSE is a mean over outputs too; callers multiply by n, so return the per-sample sum.
    return total / cols


@njit(cache=True)
def count_correct(out, Y):
    """How many rows have the same argmax in ŷ and in the targets (ties: first index)."""
    rows, cols = out.shape
    correct = 0
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
