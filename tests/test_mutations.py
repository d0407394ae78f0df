"""Deterministic tests for bugs a mutation run planted and the random tests missed.

Each test names the planted bug it catches (in a comment). Every one of them was run against a
copy of the package with that bug planted, and failed there (see issue 12, items 19 and 20):
a test here that cannot fail is a bug in the test.
"""

import numba
import numpy as np
import pytest

import fastmlp
from fastmlp import network as network_module
from fastmlp import reference

COLS = 5
# ±120 overflows exp() in float32 (e¹²⁰ ≈ 1.3e52 > 3.4e38) and ±1000 in float64, unless the
# kernel shifts by the row's true maximum (or takes softplus of -|z|).
LOGITS = [120.0, -120.0, 1000.0, -1000.0]
DTYPES = [np.float32, np.float64]
# Relative to the largest entry, as in test_agreement.py.
TOLERANCE = {np.float32: 2e-5, np.float64: 1e-12}


def assert_close(actual, expected, dtype):
    expected = np.asarray(expected, dtype=np.float64)
    tol = TOLERANCE[dtype]
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def extreme_batch(column, logit, dtype):
    """A (COLS, COLS) batch of moderate logits with ``logit`` in every row of ``column``."""
    rng = np.random.default_rng(column)
    Z = rng.normal(size=(COLS, COLS)) * 3
    Z[:, column] = logit
    return Z.astype(dtype)


# --- item 19: extreme logits in every column, at the kernel -----------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("logit", LOGITS)
@pytest.mark.parametrize("column", range(COLS))
def test_softmax_cross_entropy_extreme_logit_in_every_column(column, logit, dtype):
    # Catches: softmax_cross_entropy searching its row maximum from the wrong column (skipping
    # the first or the last), and log p taken as log(softmax) where softmax underflowed to 0.
    from fastmlp.kernels import activations, costs

    Z = extreme_batch(column, logit, dtype)
    Y = np.eye(COLS, dtype=dtype)  # row r's class is r: one row's class is the extreme column
    A, delta = Z.copy(), np.empty_like(Z)
    summed = costs.output_delta(costs.CROSS_ENTROPY, activations.SOFTMAX, A, Y, Y[:0, 0],
                                COLS, delta)
    expected = reference.sample_costs("cross_entropy", Z, None, Y)  # log-softmax of z
    assert np.isfinite(summed) and np.isfinite(A).all() and np.isfinite(delta).all()
    assert_close(summed, expected.sum(), dtype)
    probabilities = reference.softmax(Z.astype(np.float64))
    assert_close(A, probabilities, dtype)
    assert_close(delta, (probabilities - Y) / COLS, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("logit", LOGITS)
@pytest.mark.parametrize("column", range(COLS))
def test_sigmoid_binary_cross_entropy_extreme_logit_in_every_column(column, logit, dtype):
    # Catches: a softplus written log1p(exp(x)) (overflows at large x) and a cost computed as
    # -[y log σ + (1-y) log(1-σ)] from a σ that saturated to 0 or 1.
    from fastmlp.kernels import activations, costs

    Z = extreme_batch(column, logit, dtype)
    Y = np.zeros((COLS, COLS), dtype)
    Y[::2] = 1  # the extreme column has targets 1 and 0: both log σ and log(1-σ) are read
    Y[:, (column + 1) % COLS] = np.arange(COLS) % 2
    A, delta = Z.copy(), np.empty_like(Z)
    summed = costs.output_delta(costs.BINARY_CROSS_ENTROPY, activations.SIGMOID, A, Y,
                                Y[:0, 0], COLS, delta)
    expected = reference.sample_costs("binary_cross_entropy", Z, None, Y)  # softplus form
    assert np.isfinite(summed) and np.isfinite(A).all() and np.isfinite(delta).all()
    assert_close(summed, expected.sum(), dtype)
    probabilities = reference.sigmoid(Z.astype(np.float64))
    assert_close(A, probabilities, dtype)
    assert_close(delta, (probabilities - Y) / COLS, dtype)


# --- item 19: the same through the public API (inference and gradient paths) -----------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cost,output", [("cross_entropy", "softmax"),
                                         ("binary_cross_entropy", "sigmoid")])
def test_loss_and_gradients_finite_with_extreme_logits_in_every_column(cost, output, dtype):
    # Catches the same two bugs on the paths a user takes: net.loss runs the inference kernels,
    # net.gradients the training loop's GRADIENT mode. The network's logits are its inputs
    # (one identity-weight layer), so the extreme value sits in a chosen column.
    name = np.dtype(dtype).name
    nets = [fastmlp.Network([COLS, COLS], [output], cost, backend=backend, dtype=name)
            for backend in ("numba", "numpy")]
    for net in nets:
        net.weights = [np.eye(COLS)]
        net.biases = [np.zeros(COLS)]
    fast, ref = nets
    # Labels 0..4 (one row's class is the extreme column), or multi-label targets.
    y = np.arange(COLS) if cost == "cross_entropy" else np.maximum(np.eye(COLS),
                                                                    np.eye(COLS)[::-1])
    for column in range(COLS):
        for logit in LOGITS:
            X = extreme_batch(column, logit, dtype)
            where = f"column {column}, logit {logit}"
            loss = fast.loss(X, y)
            assert np.isfinite(loss), where
            assert_close(loss, ref.loss(X, y), dtype)
            for (dW, db), (rW, rb) in zip(fast.gradients(X, y), ref.gradients(X, y)):
                assert np.isfinite(dW).all() and np.isfinite(db).all(), where
                assert_close(dW, rW, dtype)
                assert_close(db, rb, dtype)


# --- item 19: dropout through sigmoid and tanh hidden layers ----------------------------------


@pytest.mark.parametrize("hidden", ["sigmoid", "tanh"])
def test_dropout_through_smooth_hidden_layers_matches_reference(hidden):
    # Catches: dropout_backward that skips undoing the 1/(1-p) scale of the kept activations
    # before f'(a) (ReLU's f' ignores a positive scale, so ReLU networks cannot see it), and
    # one that skips scaling the kept gradients by 1/(1-p). Several steps of both backends,
    # batches of two thread parts (when there are two threads), in float64 so the tolerance
    # can be tight.
    rng = np.random.default_rng(4)
    X = rng.normal(size=(96, 10))
    y = rng.integers(0, 3, 96)
    kw = dict(activations=[hidden, hidden, "softmax"], dtype="float64", seed=3)
    fast, ref = (fastmlp.Network([10, 16, 12, 3], backend=b, **kw) for b in ("numba", "numpy"))
    start = [w.copy() for w in fast.weights]
    histories = [net.fit(X, y, epochs=3, batch_size=32, learning_rate=0.5, dropout=0.4,
                         verbose=False) for net in (fast, ref)]
    for a, b in zip(fast.weights + fast.biases, ref.weights + ref.biases):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(histories[0].loss, histories[1].loss, rtol=1e-9)
    assert max(np.abs(a - b).max() for a, b in zip(fast.weights, start)) > 0.05  # it moved


# --- item 19: L2 once per batch, whatever the threads ------------------------------------------


@pytest.fixture
def two_threads():
    """Two threads where numba has them (restored afterwards): every product of a 48-row
    batch is then split in two."""
    before = fastmlp.get_num_threads()
    fastmlp.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    yield
    fastmlp.set_num_threads(before)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_l2_is_added_once_per_batch_with_two_threads(two_threads, optimizer):
    # Catches: the L2 term added by every thread's share of a split product (it would be
    # counted once per thread in the gradient) instead of once.
    rng = np.random.default_rng(6)
    X = rng.normal(size=(96, 12))
    y = rng.integers(0, 4, 96)
    kw = dict(activations=["tanh", "softmax"], dtype="float64", seed=8)
    fast, ref = (fastmlp.Network([12, 20, 4], backend=b, **kw) for b in ("numba", "numpy"))
    for net in (fast, ref):
        net.fit(X, y, epochs=2, batch_size=48, learning_rate=0.1, l2=0.5,
                optimizer=optimizer, verbose=False)
    for a, b in zip(fast.weights + fast.biases, ref.weights + ref.biases):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)
    # The gradient of net.gradients splits its 96 rows' products the same way.
    for (dW, db), (rW, rb) in zip(fast.gradients(X, y, l2=0.5), ref.gradients(X, y, l2=0.5)):
        np.testing.assert_allclose(dW, rW, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(db, rb, rtol=1e-9, atol=1e-12)
