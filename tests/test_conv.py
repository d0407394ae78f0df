"""Convolution and max-pooling: the reference against naive loops (and PyTorch when it is
installed), its gradients against central differences, and the compiled kernels
(fastmlp.kernels.conv) against the reference on random shapes, both dtypes, and views."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastmlp import reference
from fastmlp import _layout as layout
from fastmlp.kernels import conv, dense

TOL = {np.float64: 1e-12, np.float32: 2e-5}
DTYPES = [np.float64, np.float32]


def close(got, want, dtype):
    """Agreement relative to the largest entry of ``want``."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    scale = max(np.abs(want).max(initial=0.0), 1e-30)
    err = np.abs(got - want).max(initial=0.0) / scale
    assert err <= TOL[dtype], f"relative error {err:.3g}"


def out_size(n, k, stride, pad):
    return (n + 2 * pad - k) // stride + 1


# --- naive loops: the definitions, one multiply-add at a time -----------------------------


def naive_conv2d(X, W, b, stride, pad):
    n, C, H, Wd = X.shape
    F, _, kh, kw = W.shape
    OH, OW = out_size(H, kh, stride, pad), out_size(Wd, kw, stride, pad)
    Z = np.zeros((n, F, OH, OW), X.dtype)
    for s in range(n):
        for f in range(F):
            for i in range(OH):
                for j in range(OW):
                    acc = b[f]
                    for c in range(C):
                        for u in range(kh):
                            for v in range(kw):
                                y, x = i * stride + u - pad, j * stride + v - pad
                                if 0 <= y < H and 0 <= x < Wd:
                                    acc += W[f, c, u, v] * X[s, c, y, x]
                    Z[s, f, i, j] = acc
    return Z


def naive_conv2d_backward(X, W, delta, stride, pad):
    n, C, H, Wd = X.shape
    F, _, kh, kw = W.shape
    dX, dW, db = np.zeros_like(X), np.zeros_like(W), np.zeros(F, X.dtype)
    for s in range(n):
        for f in range(F):
            for i in range(delta.shape[2]):
                for j in range(delta.shape[3]):
                    d = delta[s, f, i, j]
                    db[f] += d
                    for c in range(C):
                        for u in range(kh):
                            for v in range(kw):
                                y, x = i * stride + u - pad, j * stride + v - pad
                                if 0 <= y < H and 0 <= x < Wd:
                                    dW[f, c, u, v] += d * X[s, c, y, x]
                                    dX[s, c, y, x] += d * W[f, c, u, v]
    return dX, dW, db


def naive_maxpool2d(X, size, stride):
    n, C, H, W = X.shape
    OH, OW = out_size(H, size, stride, 0), out_size(W, size, stride, 0)
    Z = np.zeros((n, C, OH, OW), X.dtype)
    A = np.zeros((n, C, OH, OW), np.int64)
    for s in range(n):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    best, where = None, None
                    for u in range(size):  # row-major window order; first maximum wins
                        for v in range(size):
                            y, x = i * stride + u, j * stride + v
                            if best is None or X[s, c, y, x] > best:
                                best, where = X[s, c, y, x], (c * H + y) * W + x
                    Z[s, c, i, j], A[s, c, i, j] = best, where
    return Z, A


def random_conv_case(rng, dtype, max_batch=9):
    """Random geometry (kernel 1-5 per axis, stride 1-3, padding 0-2) that fits its input."""
    kh, kw = (int(k) for k in rng.integers(1, 6, 2))
    stride, pad = int(rng.integers(1, 4)), int(rng.integers(0, 3))
    H = int(rng.integers(max(1, kh - 2 * pad), 12))
    W = int(rng.integers(max(1, kw - 2 * pad), 12))
    n, C, F = int(rng.integers(1, max_batch + 1)), int(rng.integers(1, 4)), int(rng.integers(1, 5))
    X = rng.standard_normal((n, C, H, W)).astype(dtype)
    Wt = rng.standard_normal((F, C, kh, kw)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    return X, Wt, b, stride, pad


# --- the reference against the definitions ------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(8))
def test_reference_conv_matches_naive_loops(seed, dtype):
    rng = np.random.default_rng(seed)
    X, W, b, stride, pad = random_conv_case(rng, dtype, max_batch=4)
    Z = reference.conv2d(X, W, b, stride, pad)
    assert Z.dtype == dtype
    close(Z, naive_conv2d(X, W, b, stride, pad), dtype)
    delta = rng.standard_normal(Z.shape).astype(dtype)
    for got, want in zip(reference.conv2d_backward(X, W, delta, stride, pad),
                         naive_conv2d_backward(X, W, delta, stride, pad)):
        assert got.dtype == dtype
        close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size,stride", [(1, 1), (2, 2), (3, 2), (2, 1), (3, 3), (2, 3)])
def test_reference_maxpool_matches_naive_loops(size, stride, dtype):
    rng = np.random.default_rng(size * 10 + stride)
    # Small integers: plenty of ties, which must go to the first maximum of each window.
    X = rng.integers(-3, 4, (3, 2, 7, 8)).astype(dtype)
    Z, A = reference.maxpool2d(X, size, stride)
    Zn, An = naive_maxpool2d(X, size, stride)
    np.testing.assert_array_equal(Z, Zn)
    np.testing.assert_array_equal(A, An)
    delta = rng.standard_normal(Z.shape).astype(dtype)
    dX = reference.maxpool2d_backward(delta, A, X.shape)
    want = np.zeros((3, 2 * 7 * 8), dtype)
    for s, c, i, j in np.ndindex(Z.shape):
        want[s, An[s, c, i, j]] += delta[s, c, i, j]
    close(dX.reshape(3, -1), want, dtype)


def test_maxpool_tie_goes_to_first_in_row_major_window_order():
    X = np.array([[[[1.0, 5.0], [5.0, 5.0]]]])
    Z, A = reference.maxpool2d(X, 2, 2)
    assert Z[0, 0, 0, 0] == 5 and A[0, 0, 0, 0] == 1  # (0, 1) comes before (1, 0) and (1, 1)


def test_overlapping_pool_windows_sum_their_gradients():
    # 3x3 input, 2x2 windows at stride 1: the centre wins all four windows.
    X = np.zeros((1, 1, 3, 3))
    X[0, 0, 1, 1] = 9
    Z, A = reference.maxpool2d(X, 2, 1)
    assert (A == 4).all()
    dX = reference.maxpool2d_backward(np.ones_like(Z), A, X.shape)
    assert dX[0, 0, 1, 1] == 4 and dX.sum() == 4


def test_reference_conv_accepts_kernel_pairs_and_floors_sizes():
    X = np.ones((1, 1, 7, 6))
    Z = reference.conv2d(X, np.ones((2, 1, 3, 2)), np.zeros(2), stride=2, padding=1)
    assert Z.shape == (1, 2, out_size(7, 3, 2, 1), out_size(6, 2, 2, 1))  # (1, 2, 4, 4)


# --- the reference against PyTorch ------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_reference_matches_torch(seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(100 + seed)
    X, W, b, stride, pad = random_conv_case(rng, np.float64)
    pad = min(pad, W.shape[2] // 2, W.shape[3] // 2)  # PyTorch's limit on padding
    tX, tW, tb = (torch.tensor(a, requires_grad=True) for a in (X, W, b))
    tZ = F.conv2d(tX, tW, tb, stride=stride, padding=pad)
    Z = reference.conv2d(X, W, b, stride, pad)
    close(Z, tZ.detach().numpy(), np.float64)
    delta = rng.standard_normal(Z.shape)
    tZ.backward(torch.tensor(delta))
    dX, dW, db = reference.conv2d_backward(X, W, delta, stride, pad)
    for got, want in ((dX, tX.grad), (dW, tW.grad), (db, tb.grad)):
        close(got, want.numpy(), np.float64)

    size = int(rng.integers(1, min(X.shape[2:]) + 1))
    pstride = int(rng.integers(1, 4))
    tX = torch.tensor(X, requires_grad=True)
    tP, idx = F.max_pool2d(tX, size, pstride, return_indices=True)
    P, A = reference.maxpool2d(X, size, pstride)
    close(P, tP.detach().numpy(), np.float64)
    H, Wd = X.shape[2:]
    np.testing.assert_array_equal(A % (H * Wd), idx.numpy())  # torch: index within the map
    delta = rng.standard_normal(P.shape)
    tP.backward(torch.tensor(delta))
    close(reference.maxpool2d_backward(delta, A, X.shape), tX.grad.numpy(), np.float64)


# --- finite differences -----------------------------------------------------------------------


def numeric_gradient(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        saved = x[i]
        x[i] = saved + h
        up = f()
        x[i] = saved - h
        down = f()
        x[i] = saved
        g[i] = (up - down) / (2 * h)
    return g


@pytest.mark.parametrize("stride,pad,kernel", [(1, 0, (3, 3)), (2, 1, (3, 2)), (3, 2, (2, 4))])
def test_conv_backward_matches_central_differences(stride, pad, kernel):
    rng = np.random.default_rng(stride)
    X = rng.standard_normal((2, 2, 6, 7))
    W = rng.standard_normal((3, 2, *kernel))
    b = rng.standard_normal(3)
    R = rng.standard_normal(reference.conv2d(X, W, b, stride, pad).shape)

    def cost():  # ∂cost/∂Z = R
        return float(np.sum(reference.conv2d(X, W, b, stride, pad) * R))

    dX, dW, db = reference.conv2d_backward(X, W, R, stride, pad)
    for analytic, param in ((dX, X), (dW, W), (db, b)):
        np.testing.assert_allclose(analytic, numeric_gradient(cost, param), rtol=1e-6,
                                   atol=1e-7)


@pytest.mark.parametrize("size,stride", [(2, 2), (3, 1), (2, 3)])
def test_maxpool_backward_matches_central_differences(size, stride):
    rng = np.random.default_rng(size + stride)
    # Distinct values, spaced far beyond h: every window has one clear winner.
    X = rng.permutation(2 * 3 * 7 * 7).reshape(2, 3, 7, 7).astype(np.float64) * 0.01
    R = rng.standard_normal(reference.maxpool2d(X, size, stride)[0].shape)

    def cost():
        return float(np.sum(reference.maxpool2d(X, size, stride)[0] * R))

    _, A = reference.maxpool2d(X, size, stride)
    dX = reference.maxpool2d_backward(R, A, X.shape)
    np.testing.assert_allclose(dX, numeric_gradient(cost, X), rtol=1e-6, atol=1e-8)


# --- the kernels against the reference --------------------------------------------------------


def table_row(kind, C, H, W, F, kh, kw, stride, pad):
    row = np.zeros(layout.COLUMNS, np.int64)
    row[layout.KIND] = kind
    row[layout.IN_C], row[layout.IN_H], row[layout.IN_W] = C, H, W
    row[layout.OUT_C] = F
    row[layout.OUT_H] = out_size(H, kh, stride, pad)
    row[layout.OUT_W] = out_size(W, kw, stride, pad)
    row[layout.KH], row[layout.KW], row[layout.STRIDE], row[layout.PAD] = kh, kw, stride, pad
    return row


def in_buffer(a, rng, front=3):
    """``a`` copied into the middle of a larger flat buffer: a C-contiguous view, as the
    training loop passes its activations and parameters."""
    buf = rng.standard_normal(a.size + front + 5).astype(a.dtype)
    view = buf[front:front + a.size].reshape(a.shape)
    view[...] = a
    return view


GUARD = 64


def guarded_work(row, n, dtype):
    """Exactly ``conv_work_size`` floats, followed by a NaN guard that must stay untouched."""
    size = int(conv.conv_work_size(row, n))
    buf = np.full(size + GUARD, np.nan, dtype)
    return buf, buf[:size]


def check_conv_kernels(X, W, b, stride, pad, dtype, rng):
    n, C, H, Wd = X.shape
    F, _, kh, kw = W.shape
    row = table_row(layout.CONV, C, H, Wd, F, kh, kw, stride, pad)
    Xf, Wf = in_buffer(X.reshape(n, -1), rng), in_buffer(W.reshape(F, -1), rng)
    bf = in_buffer(b, rng)
    buf, work = guarded_work(row, n, dtype)
    Z_ref = reference.conv2d(X, W, b, stride, pad)
    Z = in_buffer(np.full((n, Z_ref[0].size), np.nan, dtype), rng)
    conv.conv_forward(Xf, Wf, bf, row, Z, work)
    close(Z, Z_ref.reshape(n, -1), dtype)

    delta = rng.standard_normal(Z_ref.shape).astype(dtype)
    dX_ref, dW_ref, db_ref = reference.conv2d_backward(X, W, delta, stride, pad)
    dW0 = rng.standard_normal(Wf.shape).astype(dtype)  # the caller's L2 term: kept, added to
    db0 = rng.standard_normal(F).astype(dtype)
    dW, db = in_buffer(dW0, rng), in_buffer(db0, rng)
    dX = in_buffer(np.full((n, C * H * Wd), np.nan, dtype), rng)
    delta_f = in_buffer(delta.reshape(n, -1), rng)
    conv.conv_weight_gradient(Xf, delta_f, row, 0, F, dW, db, work)
    conv.conv_input_gradient(Wf, delta_f, row, dX, work)
    close(dW - dW0, dW_ref.reshape(F, -1), dtype)
    close(db - db0, db_ref, dtype)
    close(dX, dX_ref.reshape(n, -1), dtype)
    assert np.isnan(buf[-GUARD:]).all(), "wrote past conv_work_size"

    # The filters in two calls (as two threads take them, each at least gemm's MR rows when
    # the whole is): the same bits as one call.
    if dense.MR <= F < 2 * dense.MR:
        return
    dW2, db2 = dW0.copy(), db0.copy()
    half = F // 2
    conv.conv_weight_gradient(Xf, delta_f, row, 0, half, dW2, db2, work)
    conv.conv_weight_gradient(Xf, delta_f, row, half, F, dW2, db2, work)
    np.testing.assert_array_equal(dW2, dW)
    np.testing.assert_array_equal(db2, db)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(12))
def test_conv_kernels_match_reference(seed, dtype):
    rng = np.random.default_rng(1000 + seed)
    check_conv_kernels(*random_conv_case(rng, dtype), dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,C,H,F,pad", [(64, 1, 28, 16, 2), (9, 16, 14, 32, 2),
                                         (5, 3, 9, 4, 0)])
def test_conv_kernels_on_mnist_shapes(n, C, H, F, pad, dtype):
    """The MNIST CNN's layers (5x5, padding 2): batches that fill several image groups and
    one that leaves a short last group."""
    rng = np.random.default_rng(n)
    X = np.maximum(rng.standard_normal((n, C, H, H)), 0).astype(dtype)  # ReLU-like zeros
    W = (rng.standard_normal((F, C, 5, 5)) * 0.2).astype(dtype)
    check_conv_kernels(X, W, rng.standard_normal(F).astype(dtype), 1, pad, dtype, rng)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 9), C=st.integers(1, 3), F=st.integers(1, 5),
       kh=st.integers(1, 5), kw=st.integers(1, 5), stride=st.integers(1, 3),
       pad=st.integers(0, 2), extra_h=st.integers(0, 6), extra_w=st.integers(0, 6),
       f32=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_conv_kernels_match_reference_hypothesis(n, C, F, kh, kw, stride, pad, extra_h, extra_w,
                                                 f32, seed):
    dtype = np.float32 if f32 else np.float64
    rng = np.random.default_rng(seed)
    H, W = max(1, kh - 2 * pad) + extra_h, max(1, kw - 2 * pad) + extra_w
    X = rng.standard_normal((n, C, H, W)).astype(dtype)
    Wt = rng.standard_normal((F, C, kh, kw)).astype(dtype)
    check_conv_kernels(X, Wt, rng.standard_normal(F).astype(dtype), stride, pad, dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size,stride,H,W", [(2, 2, 28, 28), (2, 2, 7, 9), (3, 1, 6, 5),
                                             (3, 2, 7, 7), (2, 3, 8, 8), (2, 1, 5, 6),
                                             (1, 1, 3, 4), (4, 4, 4, 4)])
def test_maxpool_kernels_match_reference(size, stride, H, W, dtype):
    rng = np.random.default_rng(size * 100 + H)
    n, C = 5, 3
    # Ties everywhere (small integers) and overlapping windows where stride < size.
    X = rng.integers(-2, 3, (n, C, H, W)).astype(dtype)
    Z_ref, A_ref = reference.maxpool2d(X, size, stride)
    row = table_row(layout.POOL, C, H, W, C, size, size, stride, 0)
    Z = in_buffer(np.full((n, Z_ref[0].size), np.nan, dtype), rng)
    A = np.full((n, Z_ref[0].size), -1, np.int32)
    conv.maxpool_forward(in_buffer(X.reshape(n, -1), rng), row, Z, A)
    np.testing.assert_array_equal(Z, Z_ref.reshape(n, -1))
    np.testing.assert_array_equal(A, A_ref.reshape(n, -1))

    delta = rng.standard_normal(Z_ref.shape).astype(dtype)
    dX = in_buffer(np.full((n, C * H * W), np.nan, dtype), rng)
    conv.maxpool_backward(in_buffer(delta.reshape(n, -1), rng), A, row, dX)
    close(dX, reference.maxpool2d_backward(delta, A_ref, X.shape).reshape(n, -1), dtype)


def test_work_size_grows_with_the_part_only_up_to_a_group():
    row = table_row(layout.CONV, 16, 14, 14, 32, 5, 5, 1, 2)
    sizes = [conv.conv_work_size(row, n) for n in (1, 2, conv.GROUP, 64, 1000)]
    assert sizes[0] < sizes[1] <= sizes[2] == sizes[3] == sizes[4]
