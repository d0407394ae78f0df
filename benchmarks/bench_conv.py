"""The convolution and max-pooling kernels against the reference (and PyTorch), at the MNIST
CNN's shapes: ``(1,28,28) - conv16 5x5 pad 2 - pool2 - conv32 5x5 pad 2 - pool2``, one
thread's part of a batch (64 images).

``pytest benchmarks/bench_conv.py --benchmark-only --benchmark-group-by=group``; one group per
kernel and layer, contenders ``numba`` (fastmlp.kernels.conv), ``numpy`` (fastmlp.reference),
``im2col`` (convolution only: numpy im2col + ``np.matmul``, the plain-BLAS way to the same
products) and ``torch`` (``torch.nn.functional``; its backward is forward + autograd, what a
training step pays; skipped when not installed). Under ``--benchmark-disable`` (the test
suite's smoke run) a part is 4 images.

Every call into ``fastmlp.kernels.conv`` goes through the ``*_call`` adapters below, so a
signature change is a one-place edit here.
"""

import numpy as np
import pytest

from fastmlp import reference

F32 = np.float32
PART = 64
BACKENDS = ("numba", "numpy", "torch")
CONV_BACKENDS = ("numba", "numpy", "im2col", "torch")

# name: (C, H, W, filters, kernel, padding); all stride 1.
CONVS = {"conv1 1x28x28->16": (1, 28, 28, 16, 5, 2), "conv2 16x14x14->32": (16, 14, 14, 32, 5, 2)}
# name: (C, H, W, size)
POOLS = {"pool1 16x28x28": (16, 28, 28, 2), "pool2 32x14x14": (32, 14, 14, 2)}


def _conv():
    from fastmlp import _layout as layout
    from fastmlp.kernels import conv

    return conv, layout


def _row(kind, C, H, W, F, k, stride, pad):
    layout = _conv()[1]
    row = np.zeros(layout.COLUMNS, np.int64)
    OH, OW = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
    for col, v in ((layout.KIND, kind), (layout.IN_C, C), (layout.IN_H, H), (layout.IN_W, W),
                   (layout.OUT_C, F), (layout.OUT_H, OH), (layout.OUT_W, OW), (layout.KH, k),
                   (layout.KW, k), (layout.STRIDE, stride), (layout.PAD, pad)):
        row[col] = v
    return row


def _out_size(row):
    layout = _conv()[1]
    return int(row[layout.OUT_C] * row[layout.OUT_H] * row[layout.OUT_W])


def _part(benchmark):
    return 4 if getattr(benchmark, "disabled", False) else PART


def _run(benchmark, group, fn):
    benchmark.group = group
    fn()  # compile / load the numba cache, warm the caches
    benchmark(fn)


def _im2col(X, k, pad):
    """``(C·k·k, n·OH·OW)``: every window as a column (stride 1), by numpy."""
    Xp = np.pad(X, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(Xp, (k, k), axis=(2, 3))
    return np.ascontiguousarray(win.transpose(1, 4, 5, 0, 2, 3)).reshape(X.shape[1] * k * k, -1)


def im2col_forward(X, W, b, pad):
    F, n = W.shape[0], X.shape[0]
    out = W.reshape(F, -1) @ _im2col(X, W.shape[2], pad) + b[:, None]
    return out.reshape(F, n, -1).transpose(1, 0, 2)


def im2col_backward(X, W, delta, pad, need_dX):
    F, C, k, _ = W.shape
    n, _, OH, OW = delta.shape
    dg = delta.transpose(1, 0, 2, 3).reshape(F, -1)
    dW, db = dg @ _im2col(X, k, pad).T, dg.sum(axis=1)
    if not need_dX:
        return dW, db
    dcols = (W.reshape(F, -1).T @ dg).reshape(C, k, k, n, OH, OW)
    dXp = np.zeros((n, C, X.shape[2] + 2 * pad, X.shape[3] + 2 * pad), X.dtype)
    for u in range(k):
        for v in range(k):
            dXp[:, :, u:u + OH, v:v + OW] += dcols[:, u, v].transpose(1, 0, 2, 3)
    return dW, db, dXp[:, :, pad:pad + X.shape[2], pad:pad + X.shape[3]]


def _torch():
    return pytest.importorskip("torch")


# --- adapters: the one place that knows the kernels' signatures --------------------------


def conv_forward_call(X, W, b, row, Z):
    conv = _conv()[0]
    work = np.empty(conv.conv_work_size(row, X.shape[0]), X.dtype)
    return lambda: conv.conv_forward(X, W, b, row, Z, work)


def conv_backward_call(X, W, delta, row, dW, db, dX, need_dX):
    conv = _conv()[0]
    work = np.empty(conv.conv_work_size(row, X.shape[0]), X.dtype)
    def backward():
        conv.conv_weight_gradient(X, delta, row, 0, dW.shape[0], dW, db, work)
        if need_dX:
            conv.conv_input_gradient(W, delta, row, dX, work)
    return backward


def maxpool_forward_call(X, row, Z, argmax):
    conv = _conv()[0]
    return lambda: conv.maxpool_forward(X, row, Z, argmax)


def maxpool_backward_call(delta, argmax, row, dX):
    conv = _conv()[0]
    return lambda: conv.maxpool_backward(delta, argmax, row, dX)


# --- convolution ------------------------------------------------------------------------------


def _conv_case(name, n, rng):
    C, H, W, F, k, pad = CONVS[name]
    X = np.maximum(rng.standard_normal((n, C, H, W)), 0).astype(F32)  # post-ReLU zeros
    Wt = (rng.standard_normal((F, C, k, k)) * np.sqrt(2 / (C * k * k))).astype(F32)
    b = np.zeros(F, F32)
    delta = rng.standard_normal((n, F, H, W)).astype(F32) * F32(1e-3)
    return X, Wt, b, delta, pad, _row(1, C, H, W, F, k, 1, pad)


@pytest.mark.parametrize("backend", CONV_BACKENDS)
@pytest.mark.parametrize("name", list(CONVS))
def test_conv_forward(benchmark, rng, backend, name):
    n = _part(benchmark)
    X, W, b, _, pad, row = _conv_case(name, n, rng)
    if backend == "numba":
        Z = np.empty((n, _out_size(row)), F32)
        fn = conv_forward_call(X.reshape(n, -1), W.reshape(W.shape[0], -1), b, row, Z)
    elif backend == "numpy":
        def fn():
            reference.conv2d(X, W, b, 1, pad)
    elif backend == "im2col":
        def fn():
            im2col_forward(X, W, b, pad)
    else:
        torch = _torch()
        tX, tW, tb = torch.from_numpy(X), torch.from_numpy(W), torch.from_numpy(b)

        def fn():
            with torch.no_grad():
                torch.nn.functional.conv2d(tX, tW, tb, padding=pad)
    _run(benchmark, f"conv forward {name} x{n}", fn)


@pytest.mark.parametrize("backend", CONV_BACKENDS)
@pytest.mark.parametrize("need_dX", [False, True], ids=["dW,db", "dW,db,dX"])
@pytest.mark.parametrize("name", list(CONVS))
def test_conv_backward(benchmark, rng, backend, name, need_dX):
    n = _part(benchmark)
    X, W, b, delta, pad, row = _conv_case(name, n, rng)
    if backend == "numba":
        F = W.shape[0]
        dW, db = np.zeros((F, W[0].size), F32), np.zeros(F, F32)
        dX = np.empty((n, X[0].size), F32)
        fn = conv_backward_call(X.reshape(n, -1), W.reshape(F, -1), delta.reshape(n, -1), row,
                                dW, db, dX, need_dX)
    elif backend == "numpy":
        def fn():  # the reference always computes all three
            reference.conv2d_backward(X, W, delta, 1, pad)
    elif backend == "im2col":
        def fn():
            im2col_backward(X, W, delta, pad, need_dX)
    else:
        torch = _torch()
        tX = torch.from_numpy(X).requires_grad_(need_dX)
        tW, tb = torch.from_numpy(W).requires_grad_(), torch.from_numpy(b).requires_grad_()
        tdelta = torch.from_numpy(delta)

        def fn():  # forward + autograd backward: what a training step pays
            Z = torch.nn.functional.conv2d(tX, tW, tb, padding=pad)
            Z.backward(tdelta)
    what = "dW,db,dX" if need_dX else "dW,db"
    _run(benchmark, f"conv backward ({what}) {name} x{n}", fn)


# --- max-pooling ------------------------------------------------------------------------------


def _pool_case(name, n, rng):
    C, H, W, size = POOLS[name]
    X = np.maximum(rng.standard_normal((n, C, H, W)), 0).astype(F32)
    return X, size, _row(2, C, H, W, C, size, size, 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(POOLS))
def test_maxpool_forward(benchmark, rng, backend, name):
    n = _part(benchmark)
    X, size, row = _pool_case(name, n, rng)
    if backend == "numba":
        Z, A = np.empty((n, _out_size(row)), F32), np.empty((n, _out_size(row)), np.int32)
        fn = maxpool_forward_call(X.reshape(n, -1), row, Z, A)
    elif backend == "numpy":
        def fn():
            reference.maxpool2d(X, size, size)
    else:
        torch = _torch()
        tX = torch.from_numpy(X)

        def fn():
            with torch.no_grad():
                torch.nn.functional.max_pool2d(tX, size, size, return_indices=True)
    _run(benchmark, f"maxpool forward {name} x{n}", fn)


@pytest.mark.parametrize("backend", BACKENDS[:2])
@pytest.mark.parametrize("name", list(POOLS))
def test_maxpool_backward(benchmark, rng, backend, name):
    n = _part(benchmark)
    X, size, row = _pool_case(name, n, rng)
    Z, A = reference.maxpool2d(X, size, size)
    delta = rng.standard_normal(Z.shape).astype(F32)
    if backend == "numba":
        dX = np.empty((n, X[0].size), F32)
        fn = maxpool_backward_call(delta.reshape(n, -1), A.reshape(n, -1).astype(np.int32), row,
                                   dX)
    else:
        def fn():
            reference.maxpool2d_backward(delta, A, X.shape)
    _run(benchmark, f"maxpool backward {name} x{n}", fn)
