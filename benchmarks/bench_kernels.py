"""Each compiled kernel against its plain-numpy equivalent, at MNIST shapes.

Groups (one per kernel and shape) put ``numba`` and ``numpy`` side by side:
``pytest benchmarks/bench_kernels.py --benchmark-only --benchmark-group-by=group``.

Kernel signatures are still being tuned: every call into ``fastmlp.kernels`` goes through one
of the small ``*_call`` adapters below, so a signature change is a one-place edit here. Each
adapter returns a zero-argument callable; numba callables are run once before timing so that
compilation (or the cache load) never lands in a measurement.

Fairness: both sides start from the same input in the timer. The first layer's products are
timed two ways (``prep``): ``in-timer`` — from the dense X and the batch's row numbers, the
numpy side gathering ``X[rows]`` and the numba side building the batch's CSR, both inside the
timer; ``prepared`` — the dense batch (numpy) and its CSR (numba) both made before it. In-place
kernels (activations) get a fresh copy of their input every round, made outside the timer,
on both sides. BLAS runs on one thread, as the compiled kernels here do.
"""

import numpy as np
import pytest

from fastmlp import reference
from fastmlp.network import Network

ARCHS = {"784-128-10": [784, 128, 10], "784-512-256-10": [784, 512, 256, 10]}
BATCHES = (64, 128)
BACKENDS = ("numba", "numpy")
F32 = np.float32


def _k():
    from fastmlp.kernels import activations, backprop, costs, dense, training

    return activations, backprop, costs, dense, training


PREPS = ("in-timer", "prepared")
FRESH_ROUNDS = 2000  # rounds of the benchmarks that get a fresh input each round


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """numpy's BLAS on one thread: the kernels compared with it here run on one."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1):
        yield


def _run(benchmark, group, fn):
    benchmark.group = group
    fn()  # compile / load the numba cache, warm the caches
    benchmark(fn)


def _run_fresh(benchmark, group, fn, make_args):
    """Time ``fn(*make_args())`` with new arguments every round, made outside the timer."""
    benchmark.group = group
    fn(*make_args())  # compile / load the numba cache
    benchmark.pedantic(fn, setup=lambda: (make_args(), {}), rounds=FRESH_ROUNDS,
                       iterations=1, warmup_rounds=10)


def _batch_rows(n_total, batch, seed=0):
    return np.sort(np.random.default_rng(seed).choice(n_total, batch, replace=False)).astype(
        np.int64)


def _he(rng, n_in, n_out):
    return (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(F32)


# --- adapters: the one place that knows the kernels' signatures --------------------------


def spmm_call(csr, rows, Wt, out):
    dense = _k()[3]
    indptr, indices, data = csr
    return lambda: dense.spmm(indptr, indices, data, rows, Wt, out)


def batch_csr_buffers(X, rows):
    """Preallocated CSR arrays big enough for ``X[rows]`` (as fit's workspaces are)."""
    return (np.zeros(rows.size + 1, np.int64), np.empty(rows.size * X.shape[1], np.int32),
            np.empty(rows.size * X.shape[1], X.dtype))


def batch_csr_call(X, rows, bufs):
    """Build the CSR of ``X[rows]`` into ``bufs``; returns the callable and the CSR."""
    dense = _k()[3]
    indptr, indices, data = bufs
    return (lambda: dense.dense_to_csr(X, rows, indptr, indices, data)), bufs


def spmm_dw_call(csr, rows, delta, dWt):
    """First-layer weight gradient from CSR rows: transpose the batch, then Xᵀ δ."""
    dense = _k()[3]
    indptr, indices, data = csr
    n_in = dWt.shape[0]
    t_indptr = np.empty(n_in + 1, np.int64)
    nnz = int(sum(indptr[r + 1] - indptr[r] for r in rows))
    t_indices = np.empty(nnz, np.int32)
    t_data = np.empty(nnz, F32)
    ident = np.arange(n_in, dtype=np.int64)

    def run():
        dense.csr_rows_transposed(indptr, indices, data, rows, n_in, t_indptr, t_indices,
                                  t_data)
        dense.spmm(t_indptr, t_indices, t_data, ident, delta, dWt)

    return run


def gemm_call(A, B, out):
    dense = _k()[3]
    return lambda: dense.gemm(A, B, out)


def gemm_nt_call(A, Bt, out):
    """``out += A Btᵀ`` (the narrow-output variant), or None if the kernel is absent."""
    dense = _k()[3]
    fn = getattr(dense, "gemm_nt", None)
    return None if fn is None else (lambda: fn(A, Bt, out))


def activate_call(name):
    """``fn(Z)``: the activation applied to Z in place, as the kernels use it."""
    activations = _k()[0]
    code = activations.CODES[name]
    return lambda Z: activations.activate(code, Z)


def softmax_ce_call(Z, Y, delta):
    activations, _, costs, _, _ = _k()
    n = Z.shape[0]
    no_weights = np.zeros(0, Z.dtype)
    return lambda: costs.output_delta(costs.CROSS_ENTROPY, activations.SOFTMAX, Z, Y,
                                      no_weights, n, delta)


def batch_gradients_call(net, Xb, Y_batch):
    """One training batch's forward + backward as the training loop runs it (each layer's
    work split between threads, the first layer compressed on the fly where sparse)."""
    backend = net._backend
    return lambda: backend.gradient(Xb, Y_batch, 0.0)


def update_call(params, grads, lr):
    from fastmlp import _layout as layout
    from fastmlp.kernels import optimizers

    s1, s2 = np.zeros_like(params), np.zeros_like(params)
    cfg = layout.Settings(optimizer=optimizers.SGD, lr=lr, momentum=0.9, nesterov=False,
                          beta1=0.9, beta2=0.999, eps=1e-8, l2=0.0, l2_per_weight=False,
                          rates=np.zeros(0), key=0)  # (per-layer dropout: unused here)
    return lambda: optimizers.update(cfg, lr, params, grads, s1, s2, 0, params.size)


# --- forward product of the first layer: CSR rows x Wt vs X[rows] @ Wt ----------------------


def _first_layer_inputs(X, batch, backend, prep):
    """``(build, batch input)``: for numba the batch's CSR with rows 0..batch-1, for numpy
    the row numbers into X (in-timer) or the gathered batch (prepared); ``build`` is the
    work that belongs inside the timer (None when prepared)."""
    rows = _batch_rows(X.shape[0], batch)
    ident = np.arange(batch, dtype=np.int64)
    if backend == "numba":
        build, csr = batch_csr_call(X, rows, batch_csr_buffers(X, rows))
        build()  # compiled, and the CSR ready for the prepared variant
        return (build if prep == "in-timer" else None), (csr, ident)
    if prep == "in-timer":
        return None, rows
    return None, np.ascontiguousarray(X[rows])


@pytest.mark.parametrize("prep", PREPS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("hidden", [128, 512])
def test_spmm_forward(benchmark, mnist, backend, batch, hidden, prep):
    X = mnist[0]
    Wt = _he(np.random.default_rng(1), 784, hidden)
    out = np.zeros((batch, hidden), F32)
    build, inp = _first_layer_inputs(X, batch, backend, prep)
    if backend == "numba":
        csr, ident = inp
        product = spmm_call(csr, ident, Wt, out)

        def fn():
            if build is not None:
                build()
            product()
    elif prep == "in-timer":
        def fn():
            np.matmul(X[inp], Wt, out=out)
    else:
        def fn():
            np.matmul(inp, Wt, out=out)
    _run(benchmark, f"spmm forward 784x{hidden} b{batch} ({prep})", fn)


@pytest.mark.parametrize("prep", PREPS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("hidden", [128, 512])
def test_spmm_weight_gradient(benchmark, mnist, backend, batch, hidden, prep):
    X = mnist[0]
    delta = np.random.default_rng(2).standard_normal((batch, hidden)).astype(F32)
    dWt = np.zeros((784, hidden), F32)
    build, inp = _first_layer_inputs(X, batch, backend, prep)
    if backend == "numba":
        csr, ident = inp
        product = spmm_dw_call(csr, ident, delta, dWt)

        def fn():
            if build is not None:
                build()
            product()
    elif prep == "in-timer":
        def fn():
            np.matmul(X[inp].T, delta, out=dWt)
    else:
        def fn():
            np.matmul(inp.T, delta, out=dWt)
    _run(benchmark, f"spmm dW 784x{hidden} b{batch} ({prep})", fn)


# --- dense products of the hidden/output layers -----------------------------------------------


def _gemm_shapes():
    """(m, k, n, what) of every dense product a training batch makes after layer 0."""
    shapes = {}
    for arch in ARCHS.values():
        for b in BATCHES:
            for layer, (n_in, n_out) in enumerate(zip(arch[:-1], arch[1:])):
                if layer == 0:
                    continue
                shapes[(b, n_in, n_out)] = "forward A·Wt"
                shapes.setdefault((n_in, b, n_out), "dW Aᵀ·δ")
                shapes.setdefault((b, n_out, n_in), "dX δ·W")
    return [(*s, what) for s, what in shapes.items()]


GEMM_SHAPES = _gemm_shapes()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m,k,n,what", GEMM_SHAPES,
                         ids=[f"{m}x{k}x{n}" for m, k, n, _ in GEMM_SHAPES])
def test_gemm(benchmark, backend, m, k, n, what):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((m, k)).astype(F32)
    B = rng.standard_normal((k, n)).astype(F32)
    out = np.zeros((m, n), F32)
    if backend == "numba":
        fn = gemm_call(A, B, out)
    else:
        def fn():
            np.matmul(A, B, out=out)
    _run(benchmark, f"gemm ({m}x{k})·({k}x{n}) {what}", fn)


NARROW_SHAPES = [s for s in GEMM_SHAPES if s[2] < 16]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m,k,n,what", NARROW_SHAPES,
                         ids=[f"{m}x{k}x{n}" for m, k, n, _ in NARROW_SHAPES])
def test_gemm_nt(benchmark, backend, m, k, n, what):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((m, k)).astype(F32)
    Bt = rng.standard_normal((n, k)).astype(F32)
    out = np.zeros((m, n), F32)
    if backend == "numba":
        fn = gemm_nt_call(A, Bt, out)
        if fn is None:
            pytest.skip("fastmlp.kernels.dense has no gemm_nt")
    else:
        def fn():
            np.matmul(A, Bt.T, out=out)
    _run(benchmark, f"gemm_nt ({m}x{k})·({n}x{k})ᵀ {what}", fn)


# --- activations and the output delta ---------------------------------------------------------


ACT_SHAPES = sorted({("relu", b, w) for b in BATCHES for w in (128, 256, 512)}
                    | {("softmax", b, 10) for b in BATCHES})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,batch,width", ACT_SHAPES,
                         ids=[f"{a}-b{b}x{w}" for a, b, w in ACT_SHAPES])
def test_activation(benchmark, backend, name, batch, width):
    Z0 = np.random.default_rng(4).standard_normal((batch, width)).astype(F32)
    if backend == "numba":
        fn = activate_call(name)
    else:
        fn = reference.ACTIVATIONS[name][0]
    # A fresh copy of the same unrectified input every round, on both sides.
    _run_fresh(benchmark, f"activate {name} b{batch}x{width}", fn, lambda: (Z0.copy(),))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", BATCHES)
def test_softmax_cross_entropy_delta(benchmark, backend, batch):
    rng = np.random.default_rng(5)
    Z = rng.standard_normal((batch, 10)).astype(F32)
    Y = np.eye(10, dtype=F32)[rng.integers(0, 10, batch)]
    delta = np.empty_like(Z)
    if backend == "numba":
        fn = softmax_ce_call(Z, Y, delta)
    else:
        def fn():  # what the reference does per batch: ŷ, the loss and δ
            out = reference.softmax(Z)
            reference.batch_loss("cross_entropy", Z, out, Y)
            reference.output_delta("cross_entropy", "softmax", out, Y)
    _run(benchmark, f"softmax+CE delta b{batch}x10", fn)


# --- one whole batch: forward + backward ------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_batch_gradients(benchmark, mnist, backend, batch, arch):
    X, y = mnist[0], mnist[1]
    rows = _batch_rows(X.shape[0], batch)
    Y_batch = np.eye(10, dtype=F32)[y[rows]]
    net = Network(ARCHS[arch], backend=backend, seed=0)
    Xb = np.ascontiguousarray(X[rows])  # gathered outside the timer on both sides
    if backend == "numba":
        fn = batch_gradients_call(net, Xb, Y_batch)
    else:
        W, b, acts = net.weights, net.biases, net.activations

        def fn():
            reference.gradients(W, b, acts, "cross_entropy", Xb, Y_batch)
    _run(benchmark, f"batch_gradients {arch} b{batch}", fn)


# --- one optimizer step -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_sgd_update(benchmark, backend, arch):
    net = Network(ARCHS[arch], backend="numpy", seed=0)
    lr = 1e-7  # tiny: thousands of steps leave the parameters where they were
    rng = np.random.default_rng(6)
    if backend == "numba":
        grads = rng.standard_normal(net._params.size).astype(F32)
        fn = update_call(net._params, grads, lr)
    else:
        params = [p for pair in zip(net.weights, net.biases) for p in pair]
        grads = [rng.standard_normal(p.shape).astype(F32) for p in params]
        state = {}

        def fn():
            reference.update("sgd", params, grads, state, lr)
    _run(benchmark, f"sgd update {arch} ({net._params.size:,} params)", fn)
