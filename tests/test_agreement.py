"""The compiled kernels against fastmlp.reference, on random shapes, activations and dtypes.

Every fast path is forced explicitly: dense and CSR first layer, one thread and two, batch
sizes that do not divide the data.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fastmlp
from fastmlp import _compiled as compiled_module
from fastmlp import network as network_module
from fastmlp import reference

HIDDEN = ["relu", "sigmoid", "tanh", "identity"]
# float64 agrees to ~1e-12 relative; float32 to ~1e-5. "Relative" is to the largest entry,
# since a gradient entry can be a near-cancelling sum of much larger terms.
TOLERANCE = {"float64": 1e-12, "float32": 2e-5}


def assert_close(actual, expected, dtype, factor=1.0):
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=TOLERANCE[dtype] * factor,
                               atol=TOLERANCE[dtype] * factor * scale)


@st.composite
def problems(draw):
    """A random network description and a batch for it.

    At least one hidden layer (dropout and the hidden activations' derivatives are only
    exercised there), and about half the batches have 32 rows or more: enough rows for the
    products to be split between two threads (fastmlp.kernels.threads.MIN_ROWS each), so a
    term counted once per thread's share (L2) shows."""
    n_hidden = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 40))] + [draw(st.integers(1, 33)) for _ in range(n_hidden)]
    cost = draw(st.sampled_from(["cross_entropy", "mse", "binary_cross_entropy"]))
    sizes.append(draw(st.integers(2 if cost == "cross_entropy" else 1, 12)))
    hidden = [draw(st.sampled_from(HIDDEN)) for _ in range(n_hidden)]
    if cost in reference.OUTPUT_FOR_COST:
        out = reference.OUTPUT_FOR_COST[cost]
    else:
        out = draw(st.sampled_from(HIDDEN + ["softmax"]))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    n = draw(st.one_of(st.integers(1, 31), st.integers(32, 80)))
    zero_fraction = draw(st.sampled_from([0.0, 0.5, 0.9]))
    seed = draw(st.integers(0, 2**31))
    return sizes, hidden + [out], cost, dtype, n, zero_fraction, seed


def make_data(sizes, cost, n, zero_fraction, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, sizes[0]))
    X[rng.random(X.shape) < zero_fraction] = 0.0
    if cost == "cross_entropy":
        y = rng.integers(0, sizes[-1], n)
    elif cost == "binary_cross_entropy":
        y = (rng.random((n, sizes[-1])) < 0.4).astype(float)  # multi-label indicators
    else:
        y = rng.normal(size=(n, sizes[-1]))
    return X, y


def pair(sizes, activations, cost, dtype, seed):
    kw = dict(activations=activations, cost=cost, dtype=dtype, seed=seed)
    return (fastmlp.Network(sizes, backend="numba", **kw),
            fastmlp.Network(sizes, backend="numpy", **kw))


@pytest.fixture(params=["dense", "csr"])
def input_path(request, monkeypatch):
    """Force the first layer's dense or CSR kernels regardless of the data's density."""
    monkeypatch.setattr(compiled_module, "SPARSE_BELOW", 0.0 if request.param == "dense" else 2.0)
    return request.param


SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


# Always run, whatever the random draws: tanh and sigmoid hidden layers, L2, 64 rows (two
# thread parts); training with dropout and one batch of all 64 rows.
TANH_TWO_PARTS = ([9, 12, 7, 4], ["tanh", "sigmoid", "softmax"], "cross_entropy", "float64", 64,
                  0.5, 1)


@SETTINGS
@given(problem=problems(), l2=st.sampled_from([0.0, 0.3]))
@example(problem=TANH_TWO_PARTS, l2=0.3)
def test_forward_loss_gradients_agree(input_path, problem, l2):
    sizes, activations, cost, dtype, n, zero_fraction, seed = problem
    fast, ref = pair(sizes, activations, cost, dtype, seed)
    X, y = make_data(sizes, cost, n, zero_fraction, seed)

    for a, b in zip(fast.forward(X), ref.forward(X)):
        assert_close(a, b, dtype)
    assert_close(fast.predict_proba(X), ref.predict_proba(X), dtype)
    assert_close(fast.loss(X, y, l2=l2), ref.loss(X, y, l2=l2), dtype)
    for (dW, db), (rW, rb) in zip(fast.gradients(X, y, l2=l2), ref.gradients(X, y, l2=l2)):
        assert dW.shape == rW.shape and db.shape == rb.shape
        assert_close(dW, rW, dtype, factor=10)
        assert_close(db, rb, dtype, factor=10)


@SETTINGS
@given(problem=problems(), optimizer=st.sampled_from(["sgd", "momentum", "adam"]),
       nesterov=st.booleans(), l2=st.sampled_from([0.0, 0.01]),
       dropout=st.sampled_from([0.0, 0.0, 0.3]), whole_batch=st.booleans())
@example(problem=TANH_TWO_PARTS, optimizer="sgd", nesterov=False, l2=0.01, dropout=0.3,
         whole_batch=True)
@example(problem=([1, 5, 1, 4, 1], ["relu", "identity", "relu", "identity"], "mse", "float32", 1,
                  0.0, 3161151), optimizer="sgd", nesterov=False, l2=0.0, dropout=0.0,
         whole_batch=False)  # diverges at epoch 2 on both backends (found by hypothesis in CI)
def test_update_steps_agree(input_path, problem, optimizer, nesterov, l2, dropout, whole_batch):
    """A few optimizer steps (so momentum and Adam state matter), batches that don't divide n
    or (``whole_batch``) one batch of all n rows, dropout masks drawn identically on both
    sides."""
    sizes, activations, cost, dtype, n, zero_fraction, seed = problem
    fast, ref = pair(sizes, activations, cost, dtype, seed)
    X, y = make_data(sizes, cost, n, zero_fraction, seed)
    kw = dict(epochs=2, batch_size=n if whole_batch else max(1, n // 3 + 1), learning_rate=0.05,
              optimizer=optimizer, nesterov=nesterov, l2=l2, dropout=dropout, verbose=False)
    histories = []
    for net in (fast, ref):
        try:
            histories.append(net.fit(X, y, **kw))
        except FloatingPointError as exc:  # fit's divergence guard: both backends must agree
            histories.append(exc)
    diverged = [isinstance(h, FloatingPointError) for h in histories]
    if any(diverged):
        # A random problem can diverge (e.g. an unscaled identity output at lr 0.05): the loss
        # then ends far past the guard's 1000x, so both backends stop, at the same epoch,
        # with the parameters from before it.
        assert all(diverged), histories
        assert str(histories[0]).split(" (")[0] == str(histories[1]).split(" (")[0]
    h_fast, h_ref = fast.history, ref.history
    for a, b in zip(fast.weights + fast.biases, ref.weights + ref.biases):
        assert_close(a, b, dtype, factor=50)
    assert_close(h_fast.loss, h_ref.loss, dtype, factor=50)
    # Accuracy counts argmax matches: a near-tie between two outputs (an all-zero input row
    # leaves only the biases) may flip on the last bit, so allow a sample or two.
    assert np.allclose(h_fast.accuracy, h_ref.accuracy, atol=2.5 / n)


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_short_fit_same_seed_same_parameters_on_both_backends(dropout):
    """Shuffling on, float32, several epochs, batches split across threads: both backends
    walk the same path."""
    rng = np.random.default_rng(0)
    X = rng.random((300, 30)).astype(np.float32)
    X[X < 0.6] = 0  # sparse enough for the CSR first layer
    y = rng.integers(0, 4, 300)
    nets = [fastmlp.Network([30, 24, 16, 4], backend=b, seed=7) for b in ("numba", "numpy")]
    histories = [net.fit(X, y, epochs=4, batch_size=32, learning_rate=0.2, dropout=dropout,
                         verbose=False) for net in nets]
    fast, ref = nets
    for a, b in zip(fast.weights + fast.biases, ref.weights + ref.biases):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(histories[0].loss, histories[1].loss, rtol=1e-4)
    assert histories[0].loss[-1] < histories[0].loss[0]  # it did learn


@pytest.mark.parametrize("sparse", [False, True])
def test_same_seed_same_thread_count_same_bits(sparse):
    """Threads split a batch and their gradient shares are summed in a fixed order: the same
    thread count repeats bit for bit; another count differs only by rounding."""
    rng = np.random.default_rng(3)
    X = rng.random((300, 50)).astype(np.float32)
    if sparse:
        X[X < 0.8] = 0
    y = rng.integers(0, 5, 300)
    results = {}
    before = fastmlp.get_num_threads()
    try:
        for run, threads in enumerate((1, 2, 1, 2)):
            fastmlp.set_num_threads(threads)
            net = fastmlp.Network([50, 40, 5], seed=11)
            net.fit(X, y, epochs=2, batch_size=50, verbose=False, optimizer="adam",
                    learning_rate=0.01, dropout=0.1)
            results[run] = np.concatenate([w.ravel() for w in net.weights])
    finally:
        fastmlp.set_num_threads(before)
    assert np.array_equal(results[0], results[2])
    assert np.array_equal(results[1], results[3])
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)


def test_fit_continues_optimizer_state_like_one_long_fit():
    rng = np.random.default_rng(5)
    X, y = rng.random((64, 10)), rng.integers(0, 3, 64)
    once = fastmlp.Network([10, 8, 3], seed=1)
    once.fit(X, y, epochs=4, batch_size=16, optimizer="adam", learning_rate=0.01,
             shuffle=False, verbose=False)
    pieces = fastmlp.Network([10, 8, 3], seed=1)
    for _ in range(4):
        pieces.fit(X, y, epochs=1, batch_size=16, optimizer="adam", learning_rate=0.01,
                   shuffle=False, verbose=False)
    for a, b in zip(once.weights, pieces.weights):
        np.testing.assert_array_equal(a, b)


def test_network_pickles_and_keeps_training_in_step():
    import copy
    import pickle

    rng = np.random.default_rng(0)
    X, y = rng.random((40, 4)), rng.integers(0, 2, 40)
    net = fastmlp.Network([4, 3, 2], seed=0)
    net.fit(X, y, epochs=1, optimizer="adam", verbose=False)
    net.predict_proba(X)  # fills the per-thread workspace cache, which must not travel
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        np.testing.assert_array_equal(clone.predict_proba(X), net.predict_proba(X))
        clone.fit(X, y, epochs=1, optimizer="adam", verbose=False)
        # the public views follow the parameters the kernels train
        np.testing.assert_array_equal(clone.weights[0], clone._params[:12].reshape(4, 3).T)
    net.fit(X, y, epochs=1, optimizer="adam", verbose=False)
    np.testing.assert_array_equal(clone.weights[0], net.weights[0])  # same state, same step


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_public_weights_are_live_views(backend):
    net = fastmlp.Network([3, 2], activations=["identity"], cost="mse", backend=backend)
    net.weights[0][...] = [[1, 2, 3], [4, 5, 6]]
    net.biases[0][:] = [0.5, -0.5]
    np.testing.assert_allclose(net.predict_proba([[1, 1, 1]]), [[6.5, 14.5]])
    net.weights[0] = np.zeros((2, 3))  # item assignment copies into the view
    net.weights = [np.eye(2, 3)]
    np.testing.assert_allclose(net.predict_proba([[1, 2, 3]]), [[1.5, 1.5]])


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_same_seed_same_initial_parameters(backend):
    a = fastmlp.Network([784, 64, 10], seed=42, backend=backend)
    b = fastmlp.Network([784, 64, 10], seed=42, backend="numpy")
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa, wb)
    # He for the ReLU layer, Glorot otherwise: the spreads differ as the formulas say.
    assert abs(a.weights[0].std() - np.sqrt(2 / 784)) < 0.1 * np.sqrt(2 / 784)
    assert abs(a.weights[1].std() - np.sqrt(2 / 74)) < 0.15 * np.sqrt(2 / 74)


def test_dropout_masks_match_and_have_the_right_rate():
    from fastmlp.kernels import activations

    A = np.ones((200, 300))
    activations.apply_dropout(A, 0.3, 12345, 7, 1, 0)
    expected = reference.dropout_mask(0.3, 12345, 7, 1, A.shape, A.dtype)
    np.testing.assert_array_equal(A, expected)
    assert abs(np.mean(A == 0) - 0.3) < 0.01
    np.testing.assert_allclose(A[A != 0], 1 / 0.7)
    other_step = np.ones_like(A)
    activations.apply_dropout(other_step, 0.3, 12345, 8, 1, 0)
    assert np.mean((other_step == 0) == (A == 0)) < 0.65  # a fresh mask every step


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_dropout_changes_training_but_not_inference(backend):
    rng = np.random.default_rng(0)
    X, y = rng.random((200, 12)), rng.integers(0, 3, 200)
    plain, dropped = (fastmlp.Network([12, 16, 8, 3], activations=["tanh", "relu", "softmax"],
                                      backend=backend, dtype="float64", seed=2)
                      for _ in range(2))
    np.testing.assert_array_equal(plain.predict_proba(X), dropped.predict_proba(X))
    plain.fit(X, y, epochs=1, batch_size=16, verbose=False)
    dropped.fit(X, y, epochs=1, batch_size=16, dropout=0.5, verbose=False)
    assert not np.allclose(plain.weights[0], dropped.weights[0])
    # No dropout at inference: ŷ is the plain forward pass of the trained parameters (200 rows
    # take the multi-threaded inference path, 5 rows the single-part one)...
    params = (dropped.weights, dropped.biases, dropped.activations)
    unmasked = reference.predict_proba(*params, X)
    np.testing.assert_allclose(dropped.predict_proba(X), unmasked, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dropped.predict_proba(X[:5]), unmasked[:5], rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(dropped.forward(X)[-1], unmasked, rtol=1e-12, atol=1e-14)
    Y = np.eye(3)[y]
    expected_loss = -np.mean(np.sum(Y * np.log(unmasked), axis=1))
    assert dropped.loss(X, y) == pytest.approx(expected_loss, rel=1e-12)
    assert dropped.evaluate(X, y)["loss"] == pytest.approx(expected_loss, rel=1e-12)
    # ...which a dropout mask (any step's) would change.
    for step in (0, 1):
        masked = reference.forward(*params, X, dropout=0.5, key=dropped._dropout_key,
                                   step=step, mode="train")[1][-1]
        assert np.abs(masked - unmasked).max() > 1e-2


# --- each kernel on its own ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "identity", "softmax"])
def test_activation_kernels(name, dtype):
    from fastmlp.kernels import activations

    rng = np.random.default_rng(0)
    Z = (rng.normal(size=(7, 13)) * 30).astype(dtype)  # large |z|: overflow-safe paths
    A = Z.copy()
    activations.activate(activations.CODES[name], A)
    expected = reference.ACTIVATIONS[name][0](Z)
    assert_close(A, expected, np.dtype(dtype).name)
    G = rng.normal(size=Z.shape).astype(dtype)
    out = G.copy()
    activations.activation_backward(activations.CODES[name], A, out)
    assert_close(out, reference.activation_backward(name, expected, G), np.dtype(dtype).name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (4, 4, 16), (9, 31, 17), (13, 7, 3), (64, 130, 10)])
def test_gemm_and_transpose(m, k, n, dtype):
    from fastmlp.kernels import dense

    rng = np.random.default_rng(m * 100 + k)
    name = np.dtype(dtype).name
    A = rng.normal(size=(m, k)).astype(dtype)
    B = rng.normal(size=(k, n)).astype(dtype)
    out = rng.normal(size=(m, n)).astype(dtype)
    expected = out + A @ B
    narrow = out.copy()
    dense.gemm(A, B, out)
    assert_close(out, expected, name)
    dense.gemm_nt(A, np.ascontiguousarray(B.T), narrow)  # the dot-product form
    assert_close(narrow, expected, name)
    At = np.empty((k, m), dtype)
    dense.transpose(A, At)
    np.testing.assert_array_equal(At, A.T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_kernels(dtype):
    from fastmlp.kernels import dense

    rng = np.random.default_rng(1)
    name = np.dtype(dtype).name
    X = rng.normal(size=(9, 31)).astype(dtype)
    X[rng.random(X.shape) < 0.7] = 0
    X[3] = 0  # an empty row
    indptr, indices, data = dense.to_csr(X)
    for r in range(9):
        np.testing.assert_array_equal(indices[indptr[r]:indptr[r + 1]], np.flatnonzero(X[r]))
        np.testing.assert_array_equal(data[indptr[r]:indptr[r + 1]], X[r][X[r] != 0])
    rows = np.array([4, 0, 8, 3, 8, 2], dtype=np.int64)  # repeats and an empty row
    Wt = rng.normal(size=(31, 17)).astype(dtype)
    Z = np.ones((6, 17), dtype)
    dense.spmm(indptr, indices, data, rows, Wt, Z)
    assert_close(Z, 1 + X[rows] @ Wt, name)
    # The batch's transpose in CSR form, then the weight gradient Xᵀδ through spmm.
    t_indptr = np.empty(32, np.int64)
    t_indices = np.empty(indptr[-1] * 2, np.int32)
    t_data = np.empty(indptr[-1] * 2, dtype)
    dense.csr_rows_transposed(indptr, indices, data, rows, 31, t_indptr, t_indices, t_data)
    dense_t = np.zeros((31, 6))
    for k in range(31):
        for p in range(t_indptr[k], t_indptr[k + 1]):
            dense_t[k, t_indices[p]] = t_data[p]
    np.testing.assert_array_equal(dense_t, X[rows].T)
    delta = rng.normal(size=(6, 17)).astype(dtype)
    dW = np.empty_like(Wt)
    dense.scaled_copy(dW, Wt, 0.1)
    dense.spmm(t_indptr, t_indices, t_data, np.arange(31), delta, dW)
    assert_close(dW, X[rows].T @ delta + dtype(0.1) * Wt, name)
    db = np.empty(17, dtype)
    dense.column_sums(delta, db)
    assert_close(db, delta.sum(axis=0), name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cost,out", [("cross_entropy", "softmax"), ("mse", "sigmoid"),
                                      ("mse", "softmax"), ("mse", "identity"),
                                      ("binary_cross_entropy", "sigmoid")])
def test_cost_kernel(cost, out, dtype):
    from fastmlp.kernels import activations, costs

    rng = np.random.default_rng(2)
    name = np.dtype(dtype).name
    Z = (rng.normal(size=(6, 5)) * 4).astype(dtype)
    Z[0, 0] = 120  # the other probabilities of row 0 underflow: the cost must stay finite
    Y = np.eye(5, dtype=dtype)[rng.integers(0, 5, 6)]
    Y[0] = np.eye(5)[1]
    Y[1, 2:] = 1  # several targets on (multi-label); and row 0's z of 120 saturates σ
    A, delta = Z.copy(), np.empty_like(Z)
    summed = costs.output_delta(costs.CODES[cost], activations.CODES[out], A, Y, Y[:0, 0], 6,
                                 delta)
    expected_out = reference.ACTIVATIONS[out][0](Z)
    assert_close(A, expected_out, name)
    assert np.isfinite(summed)
    assert_close(summed / 6, reference.batch_loss(cost, Z, expected_out, Y), name)
    assert_close(delta, reference.output_delta(cost, out, expected_out, Y), name)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_early_stopping_restores_the_best_epoch(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 8))
    y = rng.integers(0, 3, 120)  # pure noise: validation loss soon gets worse
    net = fastmlp.Network([8, 64, 3], seed=0, backend=backend)
    saved = {}

    def remember(epoch, history):
        saved[epoch + 1] = [w.copy() for w in net.weights]

    history = net.fit(X, y, epochs=60, batch_size=8, learning_rate=0.5, validation_split=0.25,
                      early_stopping=3, callback=remember, verbose=False)
    best = history.best_epoch
    assert history.epochs == best + 3 < 60
    assert history.val_loss[best - 1] == min(history.val_loss)
    for w, kept in zip(net.weights, saved[best]):
        np.testing.assert_array_equal(w, kept)
    assert len(history.val_loss) == history.epochs


def test_validation_split_holds_out_training_samples(monkeypatch):
    X = np.arange(100, dtype=float).reshape(50, 2)  # row i is identified by X[i, 0] = 2i
    y = np.arange(50) % 2
    checked, trained = [], []
    net = fastmlp.Network([2, 2], seed=0)
    original = net._check_XY

    def spy(X_, Y_):
        checked.append(np.asarray(X_).copy())
        return original(X_, Y_)

    class RecordingTrainer(compiled_module.CompiledTrainer):
        def __init__(self, net_, X_, *args, **kwargs):
            trained.append(np.asarray(X_).copy())
            super().__init__(net_, X_, *args, **kwargs)

    net._check_XY = spy
    monkeypatch.setattr(compiled_module, "CompiledTrainer", RecordingTrainer)
    net.fit(X, y, epochs=1, validation_split=0.2, verbose=False)
    history = net.history
    assert len(history.val_accuracy) == 1
    # fit checked all 50 rows once; the epoch's validation then evaluated 10 of them, and
    # training saw the other 40: disjoint, together all of X.
    assert len(checked) == 2 and len(trained) == 1
    np.testing.assert_array_equal(checked[0], X)
    held_out, kept = set(checked[1][:, 0]), set(trained[0][:, 0])
    assert len(checked[1]) == len(held_out) == 10 and len(trained[0]) == len(kept) == 40
    assert not held_out & kept and held_out | kept == set(X[:, 0])
    rows = (checked[1][:, 0] // 2).astype(int)
    assert history.val_loss[0] == pytest.approx(net.evaluate(X[rows], y[rows])["loss"])
    with pytest.raises(ValueError, match="not both"):
        net.fit(X, y, validation_split=0.2, validation_data=(X, y), verbose=False)
    with pytest.raises(ValueError, match="early_stopping needs"):
        net.fit(X, y, early_stopping=2, verbose=False)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_binary_cross_entropy_learns_and_predicts_thresholded_labels(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    Y = np.column_stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0]).astype(float)  # multi-label
    net = fastmlp.Network([5, 16, 2], cost="binary_cross_entropy", backend=backend, seed=0)
    assert net.activations == ["relu", "sigmoid"]
    history = net.fit(X, Y, epochs=30, batch_size=32, learning_rate=0.5, verbose=False)
    labels = net.predict(X)
    assert labels.shape == (400, 2) and set(np.unique(labels)) <= {0, 1}
    accuracy = np.mean(np.all(labels == Y, axis=1))
    assert accuracy > 0.9
    assert net.evaluate(X, Y)["accuracy"] == pytest.approx(accuracy)
    assert history.accuracy[-1] > 0.85  # the compiled loop counts the same way
    single = fastmlp.Network([5, 1], cost="binary_cross_entropy", backend=backend, seed=0)
    single.fit(X, Y[:, 0], epochs=20, learning_rate=0.5, verbose=False)  # 1-D targets
    assert single.predict(X).shape == (400,)
    assert np.mean(single.predict(X) == Y[:, 0]) > 0.9
    with pytest.raises(ValueError, match="needs a 'sigmoid' output"):
        fastmlp.Network([5, 2], ["softmax"], cost="binary_cross_entropy")
