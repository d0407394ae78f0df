"""Activations and their derivatives, in place on a batch (one sample per row)."""

import math

from numba import njit

# Codes shared with fastmlp.network (names -> codes) and with every kernel.
RELU, SIGMOID, TANH, IDENTITY, SOFTMAX = 0, 1, 2, 3, 4
CODES = {"relu": RELU, "sigmoid": SIGMOID, "tanh": TANH, "identity": IDENTITY,
         "softmax": SOFTMAX}


@njit(cache=True)
def activate(code, Z):
    """Z <- f(Z), row by row."""
    rows, cols = Z.shape
    for r in range(rows):
        z = Z[r]
        if code == RELU:
            for j in range(cols):
                if z[j] < 0:
                    z[j] = 0
        elif code == SIGMOID:
            for j in range(cols):
                # exp of a non-positive number only: no overflow for large |z|.
                e = math.exp(-abs(z[j]))
                z[j] = 1 / (1 + e) if z[j] >= 0 else e / (1 + e)
        elif code == TANH:
            for j in range(cols):
                z[j] = math.tanh(z[j])
        elif code == SOFTMAX:
            m = z[0]
            for j in range(1, cols):
                m = max(m, z[j])
            s = 0.0
            for j in range(cols):
                z[j] = math.exp(z[j] - m)
                s += z[j]
            inv = 1 / s
            for j in range(cols):
                z[j] *= inv


@njit(cache=True)
def activation_backward(code, A, G):
    """G <- ∂C/∂z given G = ∂C/∂a and the activation's output A (derivatives from a = f(z))."""
    rows, cols = A.shape
    for r in range(rows):
        a = A[r]
        g = G[r]
        if code == RELU:
            for j in range(cols):
                if a[j] <= 0:
                    g[j] = 0
        elif code == SIGMOID:
            for j in range(cols):
                g[j] *= a[j] * (1 - a[j])
        elif code == TANH:
            for j in range(cols):
                g[j] *= 1 - a[j] * a[j]
        elif code == SOFTMAX:
            # Jacobian-vector product of softmax: a ⊙ (g - <g, a>).
            dot = 0.0
            for j in range(cols):
                dot += g[j] * a[j]
            for j in range(cols):
                g[j] = a[j] * (g[j] - dot)
