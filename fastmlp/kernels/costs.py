"""Cost gradients at the output layer: δᴸ = ∂C/∂zᴸ, and the batch's summed cost."""

import math

from numba import njit

from .activations import SIGMOID, SOFTMAX, activate, activation_backward

CROSS_ENTROPY, MSE, BINARY_CROSS_ENTROPY = 0, 1, 2
CODES = {"cross_entropy": CROSS_ENTROPY, "mse": MSE,
         "binary_cross_entropy": BINARY_CROSS_ENTROPY}


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
def softplus(x):
    """log(1 + eˣ), without overflow."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@njit(cache=True, error_model="numpy")  # divisions without per-element zero checks
def sigmoid_binary_cross_entropy(Z, Y, inv_n, delta):
    """Sigmoid and binary cross-entropy fused: A <- σ(Z) in place, δ = (A - Y)·inv_n.

    Returns Σ -[y log σ(z) + (1-y) log(1-σ(z))] = Σ y softplus(-z) + (1-y) softplus(z),
    finite for any z."""
    rows, cols = Z.shape
    total = 0.0
    for r in range(rows):
        for j in range(cols):
            z = Z[r, j]
            y = Y[r, j]
            total += y * softplus(-z) + (1 - y) * softplus(z)
            e = math.exp(-abs(z))
            Z[r, j] = 1 / (1 + e) if z >= 0 else e / (1 + e)
            delta[r, j] = (Z[r, j] - y) * inv_n
    return total


@njit(cache=True)
def output_delta(cost, code, Z, Y, n, delta):
    """Activate the output layer in place (Z becomes ŷ), fill δᴸ, return the summed cost.

    ``n`` is the batch size the mean cost divides by.
    """
    rows, cols = Z.shape
    if cost == CROSS_ENTROPY and code == SOFTMAX:
        return softmax_cross_entropy(Z, Y, 1.0 / n, delta)
    if cost == BINARY_CROSS_ENTROPY and code == SIGMOID:
        return sigmoid_binary_cross_entropy(Z, Y, 1.0 / n, delta)
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
