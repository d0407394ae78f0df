"""Activations and their derivatives, in place on a batch (one sample per row)."""

import math

import numpy as np
from numba import njit

from .._layout import ACTIVATION_CODES as CODES  # noqa: F401  (names -> codes)
from .._layout import EXP, IDENTITY, RELU, SIGMOID, SOFTMAX, TANH  # noqa: F401


@njit(error_model="numpy")  # divisions without per-element zero checks
def activate(code, Z):
    """Z <- f(Z), row by row."""
    rows, cols = Z.shape
    for r in range(rows):
        if code == RELU:
            for j in range(cols):
                if Z[r, j] < 0:
                    Z[r, j] = 0
        elif code == SIGMOID:
            for j in range(cols):
                # exp of a non-positive number only: no overflow for large |z|.
                e = math.exp(-abs(Z[r, j]))
                Z[r, j] = 1 / (1 + e) if Z[r, j] >= 0 else e / (1 + e)
        elif code == TANH:
            for j in range(cols):
                Z[r, j] = math.tanh(Z[r, j])
        elif code == EXP:
            # The Poisson regressor's log link; overflows to inf past z ~ 709 (88 in
            # float32), as scikit-learn's does.
            for j in range(cols):
                Z[r, j] = math.exp(Z[r, j])
        elif code == SOFTMAX:
            m = Z[r, 0]
            for j in range(1, cols):
                m = max(m, Z[r, j])
            s = 0.0
            for j in range(cols):
                Z[r, j] = math.exp(Z[r, j] - m)
                s += Z[r, j]
            inv = 1 / s
            for j in range(cols):
                Z[r, j] *= inv


@njit
def activation_backward(code, A, G):
    """G <- ∂C/∂z given G = ∂C/∂a and the activation's output A (derivatives from a = f(z))."""
    rows, cols = A.shape
    for r in range(rows):
        if code == RELU:
            for j in range(cols):
                if A[r, j] <= 0:
                    G[r, j] = 0
        elif code == SIGMOID:
            for j in range(cols):
                G[r, j] *= A[r, j] * (1 - A[r, j])
        elif code == TANH:
            for j in range(cols):
                G[r, j] *= 1 - A[r, j] * A[r, j]
        elif code == EXP:
            for j in range(cols):
                G[r, j] *= A[r, j]  # (eᶻ)' = eᶻ = a
        elif code == SOFTMAX:
            # Jacobian-vector product of softmax: a ⊙ (g - <g, a>).
            dot = 0.0
            for j in range(cols):
                dot += G[r, j] * A[r, j]
            for j in range(cols):
                G[r, j] = A[r, j] * (G[r, j] - dot)


# Inverted dropout, with the same counter-based hash as fastmlp.reference: a unit's keep/drop
# decision is a pure function of (key, step, layer, row, unit), so no mask is ever stored.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_STEP = np.uint64(0xD1B54A32D192ED03)
_LAYER = np.uint64(0xABC98388FB8FAC03)
_ROW = np.uint64(0x8CB92BA72F3D8DD7)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(inline="always")
def dropout_uniform(key, step, layer, row, col):
    """A uniform [0, 1) number: splitmix64 of the counters (see reference.dropout_uniform)."""
    x = (np.uint64(key) + np.uint64(step) * _STEP + np.uint64(layer) * _LAYER
         + np.uint64(row) * _ROW + np.uint64(col) * _GOLDEN)
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    x = x ^ (x >> np.uint64(31))
    return float(x >> np.uint64(11)) * 2.0 ** -53


@njit
def apply_dropout(A, p, key, step, layer, row0):
    """A <- A ⊙ mask: dropped units become 0, kept ones are scaled by 1 / (1 - p).

    ``A`` holds rows ``row0 ..`` of the batch (a thread's share)."""
    scale = 1.0 / (1.0 - p)
    rows, cols = A.shape
    for r in range(rows):
        for j in range(cols):
            if dropout_uniform(key, step, layer, row0 + r, j) >= p:
                A[r, j] *= scale
            else:
                A[r, j] = 0


@njit
def dropout_backward(A, G, p, key, step, layer, row0):
    """Undo dropout before the activation's derivative: G <- G ⊙ mask, and A back to f(z)
    where the unit was kept (dropped units have G = 0, so their A does not matter)."""
    scale = 1.0 / (1.0 - p)
    rows, cols = A.shape
    for r in range(rows):
        for j in range(cols):
            if dropout_uniform(key, step, layer, row0 + r, j) >= p:
                G[r, j] *= scale
                A[r, j] *= 1.0 - p
            else:
                G[r, j] = 0
