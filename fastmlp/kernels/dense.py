"""The matrix products of a dense layer.

* ``gemm``: ``out += A B``, register-blocked 4 rows x 4 inner indices, so that every row of
  ``B`` loaded feeds four output rows. Hidden layers' forward (``Z = A Wt + b``), weight
  gradient (``dWt = Aᵀ δ + l2 Wt``) and input gradient (``G = δ W``) all run on it.
* ``spmm``: the same product with a sparse left factor in CSR form. MNIST pixels are ~80 %
  zeros, so the first layer's forward (rows: samples) and weight gradient (rows of Xᵀ: input
  pixels) use a CSR copy of the data set made once per ``fit`` and skip the zeros outright.

All of them are serial: training splits each batch across threads one level up
(``training.train_batches``), so a batch costs one fork-join, not one per product.
"""

import numpy as np
from numba import njit

# Reassociation lets LLVM vectorize; NaN/inf semantics stay IEEE.
FAST = {"reassoc", "contract", "nsz"}


# Columns of B per pass of spmm: a 784 x 128 float32 slab of weights (400 KB) stays in a
# core's L2 cache while every sample of the batch walks it.
SLAB = 128


@njit(cache=True, fastmath=FAST)
def spmm(indptr, indices, data, rows, B, out):
    """``out[i] += Σ_p data[p] · B[indices[p]]`` over the stored entries of CSR row ``rows[i]``.

    Eight entries are folded into each pass over ``out[i]``, so the output row is loaded and
    stored once per eight rows of ``B`` instead of once per row.
    """
    n_out = B.shape[1]
    n_slabs = (n_out + SLAB - 1) // SLAB
    for task in range(rows.size * n_slabs):
        # Slab-major order: all rows of a batch walk the same slab of B one after another.
        slab = task // rows.size
        i = task - slab * rows.size
        j0 = slab * SLAB
        j1 = min(n_out, j0 + SLAB)
        o = out[i, j0:j1]
        row = rows[i]
        p = indptr[row]
        end = indptr[row + 1]
        while p + 8 <= end:
            a0, a1, a2, a3 = data[p], data[p + 1], data[p + 2], data[p + 3]
            a4, a5, a6, a7 = data[p + 4], data[p + 5], data[p + 6], data[p + 7]
            b0, b1 = B[indices[p], j0:j1], B[indices[p + 1], j0:j1]
            b2, b3 = B[indices[p + 2], j0:j1], B[indices[p + 3], j0:j1]
            b4, b5 = B[indices[p + 4], j0:j1], B[indices[p + 5], j0:j1]
            b6, b7 = B[indices[p + 6], j0:j1], B[indices[p + 7], j0:j1]
            for j in range(j1 - j0):
                o[j] += ((a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j])
                         + (a4 * b4[j] + a5 * b5[j] + a6 * b6[j] + a7 * b7[j]))
            p += 8
        while p < end:
            a0 = data[p]
            b0 = B[indices[p], j0:j1]
            for j in range(j1 - j0):
                o[j] += a0 * b0[j]
            p += 1


@njit(cache=True)
def fill_rows(out, b):
    """Every row of ``out`` <- ``b`` (the bias, before spmm adds A Wt)."""
    for r in range(out.shape[0]):
        out[r] = b


@njit(cache=True)
def scaled_copy(out, W, scale):
    """``out <- scale · W`` (the L2 term, before spmm adds Aᵀ δ)."""
    for k in range(W.shape[0]):
        for j in range(W.shape[1]):
            out[k, j] = scale * W[k, j]


@njit(cache=True)
def dense_to_csr(A, rows, indptr, indices, data):
    """CSR of ``A[rows]`` into preallocated arrays (``indptr`` has ``rows.size + 1`` slots)."""
    p = 0
    indptr[0] = 0
    for i in range(rows.size):
        a = A[rows[i]]
        for k in range(a.size):
            if a[k] != 0:
                indices[p] = k
                data[p] = a[k]
                p += 1
        indptr[i + 1] = p


@njit(cache=True)
def transpose(A, out):
    """``out <- Aᵀ`` (into a workspace), by blocks to stay within cache lines."""
    rows, cols = A.shape
    for r0 in range(0, rows, 16):
        for c0 in range(0, cols, 16):
            for r in range(r0, min(rows, r0 + 16)):
                for c in range(c0, min(cols, c0 + 16)):
                    out[c, r] = A[r, c]


@njit(cache=True)
def gather_rows(X, rows, out):
    for i in range(rows.size):
        out[i] = X[rows[i]]


@njit(cache=True)
def csr_rows_transposed(indptr, indices, data, rows, n_cols, t_indptr, t_indices, t_data):
    """CSR of ``X[rows]ᵀ`` for X in CSR form: a counting sort of the batch's entries by
    column, which keeps each column's rows in batch order."""
    for k in range(n_cols + 1):
        t_indptr[k] = 0
    for i in range(rows.size):
        for p in range(indptr[rows[i]], indptr[rows[i] + 1]):
            t_indptr[indices[p] + 1] += 1
    for k in range(n_cols):
        t_indptr[k + 1] += t_indptr[k]
    for i in range(rows.size):
        for p in range(indptr[rows[i]], indptr[rows[i] + 1]):
            k = indices[p]
            q = t_indptr[k]
            t_indices[q] = i
            t_data[q] = data[p]
            t_indptr[k] = q + 1
    for k in range(n_cols, 0, -1):  # the fill advanced each start to the next one's
        t_indptr[k] = t_indptr[k - 1]
    t_indptr[0] = 0


@njit(cache=True, fastmath=FAST)
def gemm(A, B, out):
    """``out += A B`` for dense C-contiguous ``A (m, k)``, ``B (k, n)``, ``out (m, n)``.

    Four output rows and four inner indices per pass: the sixteen ``A`` entries sit in
    registers while one sweep over ``j`` loads four rows of ``B`` and updates four rows of
    ``out`` — a quarter of the memory traffic per multiply-add of the plain loop.
    """
    m, k_total = A.shape
    n = B.shape[1]
    k_main = k_total - k_total % 4
    for block in range((m + 3) // 4):
        i0 = block * 4
        if i0 + 4 <= m:
            o0, o1, o2, o3 = out[i0], out[i0 + 1], out[i0 + 2], out[i0 + 3]
            for k in range(0, k_main, 4):
                b0, b1, b2, b3 = B[k], B[k + 1], B[k + 2], B[k + 3]
                a00, a01, a02, a03 = A[i0, k], A[i0, k + 1], A[i0, k + 2], A[i0, k + 3]
                a10, a11, a12, a13 = A[i0 + 1, k], A[i0 + 1, k + 1], A[i0 + 1, k + 2], A[i0 + 1, k + 3]
                a20, a21, a22, a23 = A[i0 + 2, k], A[i0 + 2, k + 1], A[i0 + 2, k + 2], A[i0 + 2, k + 3]
                a30, a31, a32, a33 = A[i0 + 3, k], A[i0 + 3, k + 1], A[i0 + 3, k + 2], A[i0 + 3, k + 3]
                for j in range(n):
                    x0, x1, x2, x3 = b0[j], b1[j], b2[j], b3[j]
                    o0[j] += a00 * x0 + a01 * x1 + a02 * x2 + a03 * x3
                    o1[j] += a10 * x0 + a11 * x1 + a12 * x2 + a13 * x3
                    o2[j] += a20 * x0 + a21 * x1 + a22 * x2 + a23 * x3
                    o3[j] += a30 * x0 + a31 * x1 + a32 * x2 + a33 * x3
            k_start = k_main
        else:
            k_start = 0
        # Leftovers: the last k % 4 inner indices of a full block, or the rows of a short
        # last block (all of a 1-sample prediction), eight inner indices per pass.
        for i in range(i0, min(m, i0 + 4)):
            o = out[i]
            k = k_start
            while k + 8 <= k_total:
                a0, a1, a2, a3 = A[i, k], A[i, k + 1], A[i, k + 2], A[i, k + 3]
                a4, a5, a6, a7 = A[i, k + 4], A[i, k + 5], A[i, k + 6], A[i, k + 7]
                b0, b1, b2, b3 = B[k], B[k + 1], B[k + 2], B[k + 3]
                b4, b5, b6, b7 = B[k + 4], B[k + 5], B[k + 6], B[k + 7]
                for j in range(n):
                    o[j] += ((a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j])
                             + (a4 * b4[j] + a5 * b5[j] + a6 * b6[j] + a7 * b7[j]))
                k += 8
            while k < k_total:
                a = A[i, k]
                b = B[k]
                for j in range(n):
                    o[j] += a * b[j]
                k += 1


@njit(cache=True, fastmath=FAST)
def gemm_nt(A, Bt, out):
    """``out += A Btᵀ`` as dot products of rows: the shape for a narrow output (``n`` small,
    e.g. 10 classes), where gemm's sweep over ``j`` would be too short to vectorize."""
    m, k_total = A.shape
    n = Bt.shape[0]
    for i in range(m):
        a = A[i]
        for j in range(n):
            b = Bt[j]
            s = out[i, j]  # accumulate in the array's own precision
            for k in range(k_total):
                s += a[k] * b[k]
            out[i, j] = s


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
    """``(indptr, indices, data)`` of a whole dense 2-D array, allocated to fit."""
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
    dense_to_csr(X, np.arange(rows), indptr, indices, data)
    return indptr, indices, data
