"""Matmul plus bias (``Z = A Wt + b``), the input-gradient and the weight-gradient products.

Every loop runs over the input index ``k`` outermost and a contiguous row of ``Wt`` innermost,
so a zero input (MNIST pixels, ReLU outputs) skips a whole row of work. Parallel loops split
rows of the result only, never a sum, so results do not depend on the thread count.
"""

import numpy as np
from numba import njit, prange

# Reassociation lets LLVM vectorize the dot products; NaN/inf semantics stay IEEE.
FAST = {"reassoc", "contract", "nsz"}


@njit(cache=True, parallel=True, fastmath=FAST)
def dense_forward(A, Wt, b, Z):
    """Z = A Wt + b, skipping zero entries of A."""
    rows, n_in = A.shape
    n_out = Wt.shape[1]
    for r in prange(rows):
        z = Z[r]
        for j in range(n_out):
            z[j] = b[j]
        for k in range(n_in):
            a = A[r, k]
            if a != 0:
                w = Wt[k]
                for j in range(n_out):
                    z[j] += a * w[j]


@njit(cache=True, parallel=True, fastmath=FAST)
def gathered_forward(X, rows, Wt, b, Z):
    """Z = X[rows] Wt + b: the first layer reads its batch straight from the data set."""
    n_out = Wt.shape[1]
    for r in prange(rows.size):
        x = X[rows[r]]
        z = Z[r]
        for j in range(n_out):
            z[j] = b[j]
        for k in range(x.size):
            a = x[k]
            if a != 0:
                w = Wt[k]
                for j in range(n_out):
                    z[j] += a * w[j]


@njit(cache=True, parallel=True, fastmath=FAST)
def csr_forward(indptr, indices, data, rows, Wt, b, Z):
    """Z = X[rows] Wt + b with X in CSR form: only the stored nonzeros are visited."""
    n_out = Wt.shape[1]
    for r in prange(rows.size):
        z = Z[r]
        for j in range(n_out):
            z[j] = b[j]
        row = rows[r]
        for p in range(indptr[row], indptr[row + 1]):
            a = data[p]
            w = Wt[indices[p]]
            for j in range(n_out):
                z[j] += a * w[j]


@njit(cache=True, parallel=True, fastmath=FAST)
def backward_input(delta, Wt, G):
    """G = δ Wtᵀ: the gradient flowing into the previous layer's activations."""
    rows, n_out = delta.shape
    n_in = Wt.shape[0]
    for r in prange(rows):
        d = delta[r]
        for k in range(n_in):
            w = Wt[k]
            s = 0.0
            for j in range(n_out):
                s += d[j] * w[j]
            G[r, k] = s


@njit(cache=True, parallel=True, fastmath=FAST)
def weight_gradient(A, delta, Wt, l2, dWt, db):
    """dWt = Aᵀ δ + l2 Wt and db = Σ_rows δ, skipping zero entries of A."""
    rows, n_in = A.shape
    n_out = delta.shape[1]
    for k in prange(n_in):
        g = dWt[k]
        w = Wt[k]
        for j in range(n_out):
            g[j] = l2 * w[j]
        for r in range(rows):
            a = A[r, k]
            if a != 0:
                d = delta[r]
                for j in range(n_out):
                    g[j] += a * d[j]
    column_sums(delta, db)


@njit(cache=True, parallel=True, fastmath=FAST)
def gathered_weight_gradient(X, rows, delta, Wt, l2, dWt, db):
    """weight_gradient for the first layer, reading X[rows] in place."""
    n_in = Wt.shape[0]
    n_out = delta.shape[1]
    for k in prange(n_in):
        g = dWt[k]
        w = Wt[k]
        for j in range(n_out):
            g[j] = l2 * w[j]
        for r in range(rows.size):
            a = X[rows[r], k]
            if a != 0:
                d = delta[r]
                for j in range(n_out):
                    g[j] += a * d[j]
    column_sums(delta, db)


@njit(cache=True, parallel=True, fastmath=FAST)
def csr_weight_gradient(indptr, indices, data, rows, delta, Wt, l2, dWt, db, n_blocks):
    """weight_gradient for a CSR first layer.

    CSR is row-major, so the work splits over blocks of output columns: each block walks
    every stored nonzero and owns its slice of ``dWt`` — no races, fixed summation order.
    """
    n_in, n_out = Wt.shape
    width = (n_out + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        j0 = blk * width
        j1 = min(n_out, j0 + width)
        for k in range(n_in):
            for j in range(j0, j1):
                dWt[k, j] = l2 * Wt[k, j]
        for r in range(rows.size):
            d = delta[r]
            row = rows[r]
            for p in range(indptr[row], indptr[row + 1]):
                a = data[p]
                g = dWt[indices[p]]
                for j in range(j0, j1):
                    g[j] += a * d[j]
    column_sums(delta, db)


@njit(cache=True)
def column_sums(delta, out):
    rows, cols = delta.shape
    for j in range(cols):
        out[j] = 0
    for r in range(rows):
        for j in range(cols):
            out[j] += delta[r, j]


@njit(cache=True)
def to_csr(X):
    """(indptr, indices, data) of a dense 2-D array's nonzeros, row by row."""
    rows, cols = X.shape
    indptr = np.zeros(rows + 1, dtype=np.int64)
    for r in range(rows):
        count = 0
        for k in range(cols):
            if X[r, k] != 0:
                count += 1
        indptr[r + 1] = indptr[r] + count
    indices = np.empty(indptr[rows], dtype=np.int32)
    data = np.empty(indptr[rows], dtype=X.dtype)
    for r in range(rows):
        p = indptr[r]
        for k in range(cols):
            if X[r, k] != 0:
                indices[p] = k
                data[p] = X[r, k]
                p += 1
    return indptr, indices, data
