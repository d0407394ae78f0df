"""The register-tiled gemm against numpy on random shapes: every tile, strip and pass boundary
(rows around MR and MC, columns around one register and one strip, inner sizes around KC),
operands that are views into larger buffers, rows with gaps, and non-finite values."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastmlp.kernels import dense

RTOL = {np.float32: 2e-5, np.float64: 1e-12}


def lanes(dtype):
    return dense.VEC_BYTES // np.dtype(dtype).itemsize


def edge_sizes(dtype):
    """Sizes that sit on or next to a boundary of the blocking, plus anything up to 140."""
    v = lanes(dtype)
    marks = {1, 2, dense.MR, v, dense.NV * v, dense.KC, dense.MC, 2 * dense.MC}
    near = {s + d for s in marks for d in (-1, 0, 1) if s + d >= 1}
    return st.one_of(st.sampled_from(sorted(near)), st.integers(1, 140))


def view_of_flat(rng, shape, dtype, offset):
    """A C-contiguous ``shape`` view into a larger flat buffer, ``offset`` elements in (so its
    data need not be aligned), as the training workspaces are."""
    flat = rng.normal(size=offset + int(np.prod(shape)) + 7).astype(dtype)
    return flat[offset:offset + int(np.prod(shape))].reshape(shape)


def check(A, B, out):
    """gemm(A, B, out) against float64 numpy, with a tolerance scaled to |out| + |A| |B|."""
    dtype = out.dtype.type
    A64, B64, out64 = (np.asarray(x, np.float64) for x in (A, B, out))
    expected = out64 + A64 @ B64
    bound = np.abs(out64) + np.abs(A64) @ np.abs(B64)
    dense.gemm(A, B, out)
    err = np.abs(out - expected)
    assert np.all(err <= RTOL[dtype] * (1.0 + bound)), float(np.max(err / (1.0 + bound)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_gemm_random_shapes(dtype, data):
    sizes = edge_sizes(dtype)
    m, k, n = data.draw(sizes, "m"), data.draw(sizes, "k"), data.draw(sizes, "n")
    offsets = data.draw(st.tuples(*[st.integers(0, 5)] * 3), "offsets")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), "seed"))
    A = view_of_flat(rng, (m, k), dtype, offsets[0])
    B = view_of_flat(rng, (k, n), dtype, offsets[1])
    out = view_of_flat(rng, (m, n), dtype, offsets[2])
    before = out.base.copy()
    check(A, B, out)
    # Nothing outside the view was written (the overlapping last tile writes no further).
    lo, hi = offsets[2], offsets[2] + m * n
    np.testing.assert_array_equal(out.base[:lo], before[:lo])
    np.testing.assert_array_equal(out.base[hi:], before[hi:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n", [(0, 5, 40), (7, 0, 40), (7, 5, 0), (1, 1, 1)])
def test_gemm_empty_and_tiny(dtype, m, k, n):
    rng = np.random.default_rng(3)
    A = rng.normal(size=(m, k)).astype(dtype)
    B = rng.normal(size=(k, n)).astype(dtype)
    out = rng.normal(size=(m, n)).astype(dtype)
    check(A, B, out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_rows_with_gaps(dtype):
    """Column slices (rows with gaps) and every-other-column views take the strided path."""
    rng = np.random.default_rng(4)
    big_a = rng.normal(size=(70, 150)).astype(dtype)
    big_b = rng.normal(size=(140, 300)).astype(dtype)
    big_o = rng.normal(size=(70, 200)).astype(dtype)
    check(big_a[:, 3:143], big_b[:, 5:105], big_o[:, 1:101])  # unit column stride
    check(big_a[:, ::2][:, :70], big_b[:70, ::3], big_o[:, ::2])  # no unit stride at all


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 40, 67, 130])
def test_gemm_non_finite_propagates_like_numpy(dtype, n):
    """A NaN or inf reaches exactly the outputs it reaches in numpy (also in the columns a
    last, overlapping tile recomputes and must leave alone)."""
    rng = np.random.default_rng(n)
    m, k = 13, 9
    A = rng.normal(size=(m, k)).astype(dtype)
    B = rng.normal(size=(k, n)).astype(dtype)
    B[2, n - 1] = np.nan
    B[4, n // 2] = np.inf
    A[5, 3] = -np.inf
    out = rng.normal(size=(m, n)).astype(dtype)
    with np.errstate(invalid="ignore"):
        expected = out + A @ B
    dense.gemm(A, B, out)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(out[finite], expected[finite], rtol=RTOL[dtype],
                               atol=RTOL[dtype] * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_spmm_random_shapes(dtype, data):
    """spmm's register rows against numpy: widths around one register and one slab, empty and
    repeated rows, B and out as views into flat buffers."""
    v = lanes(dtype)
    wide = dense.SPARSE_NV * v
    n = data.draw(st.one_of(st.sampled_from([1, v - 1, v, v + 1, wide - 1, wide, wide + 1,
                                             2 * wide + 3]), st.integers(1, 300)), "n")
    n_rows = data.draw(st.integers(1, 30), "n_rows")
    n_cols = data.draw(st.integers(1, 90), "n_cols")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), "seed"))
    X = rng.normal(size=(n_rows, n_cols)).astype(dtype)
    X[rng.random(X.shape) < data.draw(st.floats(0, 1), "zeros")] = 0
    X[0] = 0  # an empty row
    indptr, indices, values = dense.to_csr(X)
    rows = rng.integers(0, n_rows, size=data.draw(st.integers(1, 40), "batch")).astype(np.int64)
    B = view_of_flat(rng, (n_cols, n), dtype, data.draw(st.integers(0, 5), "b_offset"))
    out = view_of_flat(rng, (rows.size, n), dtype, data.draw(st.integers(0, 5), "o_offset"))
    expected = out.astype(np.float64) + X[rows].astype(np.float64) @ B.astype(np.float64)
    bound = np.abs(out) + np.abs(X[rows]).astype(np.float64) @ np.abs(B)
    dense.spmm(indptr, indices, values, rows, B, out)
    assert np.all(np.abs(out - expected) <= RTOL[dtype] * (1.0 + bound))
