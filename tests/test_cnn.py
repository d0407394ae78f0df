"""Convolutional networks end to end: the compiled layer table against the numpy reference.

tests/test_conv.py holds each conv/pool kernel to the reference's layer functions; here whole
networks (conv, pool and dense layers in random arrangements) must agree on both backends in
forward, loss, gradients and training, and the reference's network gradient must match
central differences.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastmlp
from fastmlp import Conv2D, MaxPool2D, Network
from fastmlp import _compiled as compiled_module
from fastmlp import network as network_module

TOL = {"float64": 1e-10, "float32": 2e-4}


def assert_close(actual, expected, dtype, factor=1.0):
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOL[dtype] * factor * scale)


@st.composite
def cnns(draw):
    """A random small CNN: input shape, 1-2 conv layers each maybe followed by a pool, 0-1
    hidden dense layers, an output layer; plus activations that cover every kind."""
    c = draw(st.integers(1, 3))
    h = draw(st.integers(4, 10))
    w = draw(st.integers(4, 10))
    layers = [(c, h, w)]
    shape = (c, h, w)
    for _ in range(draw(st.integers(1, 2))):
        k = draw(st.integers(1, min(4, shape[1] + 2, shape[2] + 2)))
        pad = draw(st.integers(0, 2))
        if k > shape[1] + 2 * pad or k > shape[2] + 2 * pad:
            pad = k
        stride = draw(st.integers(1, 2))
        conv = Conv2D(draw(st.integers(1, 4)), k, stride=stride, padding=pad)
        layers.append(conv)
        oh = (shape[1] + 2 * pad - k) // stride + 1
        ow = (shape[2] + 2 * pad - k) // stride + 1
        shape = (conv.filters, oh, ow)
        if min(oh, ow) >= 2 and draw(st.booleans()):
            size = draw(st.integers(1, min(3, oh, ow)))
            pool = MaxPool2D(size, stride=draw(st.sampled_from([None, 1])))
            layers.append(pool)
            shape = (shape[0], (oh - size) // pool.stride + 1, (ow - size) // pool.stride + 1)
    hidden = draw(st.lists(st.integers(2, 12), max_size=1))
    n_out = draw(st.integers(2, 5))
    layers += hidden + [n_out]
    n_param = sum(not isinstance(s, MaxPool2D) for s in layers[1:])
    hidden_act = draw(st.lists(st.sampled_from(["relu", "tanh", "sigmoid", "identity"]),
                               min_size=n_param - 1, max_size=n_param - 1))
    cost = draw(st.sampled_from(["cross_entropy", "mse"]))
    out = "softmax" if cost == "cross_entropy" else draw(st.sampled_from(["identity",
                                                                          "sigmoid"]))
    n = draw(st.integers(1, 40))
    return layers, hidden_act + [out], cost, n


def data(layers, cost, n, dtype, seed, n_out):
    rng = np.random.default_rng(seed)
    c, h, w = layers[0]
    X = rng.normal(size=(n, c, h, w)).astype(dtype)
    if cost == "cross_entropy":
        y = rng.integers(0, n_out, n)
    else:
        y = rng.normal(size=(n, n_out)).astype(dtype)
    return X, y


def pair(layers, activations, cost, dtype, seed=3):
    kw = dict(activations=activations, cost=cost, dtype=dtype, seed=seed)
    return Network(layers, backend="numba", **kw), Network(layers, backend="numpy", **kw)


SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@SETTINGS
@given(problem=cnns(), l2=st.sampled_from([0.0, 0.2]))
def test_forward_loss_gradients_agree(problem, l2, dtype):
    layers, acts, cost, n = problem
    fast, ref = pair(layers, acts, cost, dtype)
    np.testing.assert_array_equal(fast._params, ref._params)  # same start on both backends
    X, y = data(layers, cost, n, dtype, 1, layers[-1])
    for a, b in zip(fast.forward(X), ref.forward(X)):
        assert_close(a, b, dtype)
    assert_close(fast.predict_proba(X), ref.predict_proba(X), dtype)
    assert_close(fast.loss(X, y, l2), ref.loss(X, y, l2), dtype)
    for (dW, db), (rW, rb) in zip(fast.gradients(X, y, l2), ref.gradients(X, y, l2)):
        assert dW.shape == rW.shape and db.shape == rb.shape
        assert_close(dW, rW, dtype, 10)
        assert_close(db, rb, dtype, 10)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_training_agrees_with_the_reference(optimizer, dropout):
    layers = [(2, 9, 9), Conv2D(4, 3, padding=1), MaxPool2D(2), Conv2D(3, 2), 7, 4]
    fast, ref = pair(layers, None, "cross_entropy", "float64")
    X, y = data(layers, "cross_entropy", 70, "float64", 5, 4)
    kw = dict(epochs=2, batch_size=32, learning_rate=0.05, optimizer=optimizer, l2=0.01,
              dropout=dropout, verbose=False)
    h_fast, h_ref = fast.fit(X, y, **kw), ref.fit(X, y, **kw)
    np.testing.assert_allclose(h_fast.loss, h_ref.loss, rtol=1e-9)
    assert_close(fast._params, ref._params, "float64", 10)


def test_reference_gradient_matches_central_differences():
    layers = [(2, 6, 5), Conv2D(3, 3, stride=2, padding=1), MaxPool2D(2, stride=1), 5, 3]
    net = Network(layers, activations=["tanh", "sigmoid", "softmax"], backend="numpy",
                  dtype="float64", seed=0)
    X, y = data(layers, "cross_entropy", 4, "float64", 2, 3)
    assert_matches_central_differences(net, X, y, l2=0.1)


def test_input_shapes_and_weight_layout():
    net = Network([(1, 8, 8), Conv2D(4, 3, padding=1), MaxPool2D(2), 6, 3], seed=0)
    assert [W.shape for W in net.weights] == [(4, 1, 3, 3), (6, 64), (3, 6)]
    assert [b.shape for b in net.biases] == [(4,), (6,), (3,)]
    assert net.layer_sizes == [64, 256, 64, 6, 3]
    X = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    p = net.predict_proba(X)
    np.testing.assert_array_equal(p, net.predict_proba(X.reshape(5, 8, 8)))  # (n, H, W)
    np.testing.assert_array_equal(p, net.predict_proba(X.reshape(5, 64)))  # flat rows
    with pytest.raises(ValueError, match=r"images of shape \(2, 8, 8\).*expects \(1, 8, 8\)"):
        net.predict_proba(np.zeros((5, 2, 8, 8)))
    # Writes into a conv layer's weights take effect in the kernels.
    net.weights[0][...] = 0
    net.biases[0][...] = 0
    q = net.predict_proba(X)
    np.testing.assert_allclose(q, np.broadcast_to(q[0], q.shape), rtol=1e-6)
    net.weights[0] = np.ones((4, 1, 3, 3))
    assert net.weights[0].sum() == 36
    with pytest.raises(ValueError, match=r"expected shape \(4, 1, 3, 3\)"):
        net.weights[0] = np.ones((4, 3, 3))
    assert "MaxPool2D(2)" in net.summary() and "total: " in net.summary()


def test_same_seed_same_bits_and_threads_split_batches():
    layers = [(1, 12, 12), Conv2D(4, 3), MaxPool2D(2), 10]
    X, y = data(layers, "cross_entropy", 150, "float32", 0, 10)
    results = []
    for _ in range(2):
        net = Network(layers, seed=7)
        net.fit(X, y, epochs=2, batch_size=64, learning_rate=0.05, verbose=False)
        results.append(net._params.copy())
    np.testing.assert_array_equal(results[0], results[1])
    one = Network(layers, seed=7)
    before = fastmlp.get_num_threads()
    try:
        fastmlp.set_num_threads(1)
        one.fit(X, y, epochs=2, batch_size=64, learning_rate=0.05, verbose=False)
    finally:
        fastmlp.set_num_threads(before)
    np.testing.assert_allclose(one._params, results[0], atol=1e-4)


def assert_matches_central_differences(net, X, y, l2=0.0, every=7, tol=1e-6):
    """The network's gradients against central differences of its loss, on about ``every``
    entries of each parameter array (and all of a small one)."""
    grads = net.gradients(X, y, l2=l2)
    eps = 1e-6
    for (dW, db), W, b in zip(grads, net.weights, net.biases):
        for param, grad in ((W, dW), (b, db)):
            # (dense weights are transposed views: index them, never reshape a copy)
            for i in list(np.ndindex(param.shape))[::max(1, param.size // every)]:
                keep = param[i]
                param[i] = keep + eps
                up = net.loss(X, y, l2=l2)
                param[i] = keep - eps
                down = net.loss(X, y, l2=l2)
                param[i] = keep
                assert abs((up - down) / (2 * eps) - grad[i]) < tol, (i, grad[i])


# Pooling straight after the input has no backward pass (nothing below it has parameters);
# after a 1x1 convolution the same pooling layer's backward is on the gradient's path.
POOL_FIRST = {"pool-first": [(2, 6, 6), MaxPool2D(3), 5, 3],
              "pool-after-1x1-conv": [(2, 6, 6), Conv2D(2, 1), MaxPool2D(3), 5, 3]}


@pytest.mark.parametrize("name", list(POOL_FIRST))
def test_dense_network_with_image_input_and_pool_first(name):
    layers = POOL_FIRST[name]
    n_weighted = sum(not isinstance(spec, MaxPool2D) for spec in layers[1:])
    acts = ["tanh"] * (n_weighted - 2) + ["sigmoid", "softmax"]
    fast, ref = pair(layers, acts, "cross_entropy", "float64")
    X, y = data(layers, "cross_entropy", 9, "float64", 4, 3)
    assert_close(fast.predict_proba(X), ref.predict_proba(X), "float64")
    for (a, b), (c, d) in zip(fast.gradients(X, y), ref.gradients(X, y)):
        assert_close(a, c, "float64")
        assert_close(b, d, "float64")
    assert_matches_central_differences(ref, X, y, every=20)
    assert_matches_central_differences(fast, X, y, every=20, tol=1e-5)


def test_two_conv_pool_stages_agree_and_match_central_differences():
    """conv-pool-conv-pool: the second pooling layer has its own windows (3, stride 1,
    overlapping) and its own remembered winners; its backward must use them."""
    layers = [(2, 10, 10), Conv2D(3, 3, padding=1), MaxPool2D(2), Conv2D(4, 3, padding=1),
              MaxPool2D(3, stride=1), 5, 3]
    acts = ["tanh", "tanh", "sigmoid", "softmax"]
    fast, ref = pair(layers, acts, "cross_entropy", "float64")
    X, y = data(layers, "cross_entropy", 6, "float64", 8, 3)
    assert_close(fast.predict_proba(X), ref.predict_proba(X), "float64")
    assert_close(fast.loss(X, y, 0.1), ref.loss(X, y, 0.1), "float64")
    for (a, b), (c, d) in zip(fast.gradients(X, y, 0.1), ref.gradients(X, y, 0.1)):
        assert_close(a, c, "float64")
        assert_close(b, d, "float64")
    assert_matches_central_differences(ref, X, y, l2=0.1, every=12)
    assert_matches_central_differences(fast, X, y, l2=0.1, every=5, tol=1e-5)


def test_sparse_first_layer_paths_agree(monkeypatch):
    """Dense MLP input through the CSR block and through the dense product: same answer."""
    rng = np.random.default_rng(0)
    X = rng.random((300, 30)).astype(np.float64)
    X[X < 0.8] = 0
    y = rng.integers(0, 4, 300)
    out = {}
    for name, threshold in (("dense", 0.0), ("csr", 2.0)):
        monkeypatch.setattr(compiled_module, "SPARSE_BELOW", threshold)
        net = Network([30, 8, 4], dtype="float64", seed=1)
        net.fit(X, y, epochs=1, batch_size=32, verbose=False)
        out[name] = (net._params.copy(), net.predict_proba(X))
    assert_close(out["dense"][0], out["csr"][0], "float64")
    assert_close(out["dense"][1], out["csr"][1], "float64")


def test_save_load_round_trip(tmp_path):
    layers = [(1, 8, 8), Conv2D(3, (3, 2), stride=2, padding=1), MaxPool2D(2, stride=1), 5, 3]
    net = Network(layers, activations=["tanh", "relu", "softmax"], seed=4)
    X = np.random.default_rng(1).random((6, 1, 8, 8)).astype(np.float32)
    net.fit(X, np.arange(6) % 3, epochs=1, batch_size=3, verbose=False)
    net.save(tmp_path / "cnn.npz")
    back = Network.load(tmp_path / "cnn.npz")
    assert back.layers == net.layers and back.activations == net.activations
    np.testing.assert_array_equal(back._params, net._params)
    np.testing.assert_array_equal(back.predict_proba(X), net.predict_proba(X))
    assert back.history.loss == net.history.loss
    numpy_back = Network.load(tmp_path / "cnn.npz", backend="numpy")
    np.testing.assert_allclose(numpy_back.predict_proba(X), net.predict_proba(X), atol=1e-5)


def test_corrupt_cnn_header_is_a_clear_error(tmp_path):
    import json

    from fastmlp import io

    net = Network([(1, 6, 6), Conv2D(2, 3), 3], seed=0)
    net.save(tmp_path / "m.npz")
    header, arrays = io.read_header_and_arrays(tmp_path / "m.npz")
    header["layers"][1]["kernel_size"] = [9, 9]  # no longer fits the 6x6 input
    text = json.dumps(header).encode()
    np.savez(tmp_path / "bad.npz", header=np.frombuffer(text, dtype=np.uint8), **arrays)
    with pytest.raises(ValueError, match=r"invalid header: layers: .*9x9 kernel does not fit"):
        Network.load(tmp_path / "bad.npz")
