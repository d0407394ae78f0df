"""The poisson cost (half Poisson deviance) with its exp output: kernels vs reference vs
scikit-learn's ``MLPRegressor(loss="poisson")``."""

import numpy as np
import pytest

from fastmlp import Network


def poisson_data(n=40, n_in=6, n_out=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_in))
    Y = rng.poisson(2.0, size=(n, n_out)).astype(float)
    Y[:3] = 0  # y log y at y = 0
    return X, Y


def networks(sizes, seed=0, dtype="float64"):
    acts = ["tanh"] * (len(sizes) - 2) + ["exp"]
    return [Network(sizes, activations=acts, cost="poisson", backend=b, dtype=dtype, seed=seed)
            for b in ("numpy", "numba")]


def deviance(Y, out):
    """scikit-learn's formula, written out: Σ_outputs mean_samples y log(y/ŷ) - y + ŷ."""
    y_log = np.where(Y > 0, Y * np.log(np.where(Y > 0, Y, 1) / out), 0)
    return float(np.sum(np.mean(y_log - Y + out, axis=0)))


def test_network_needs_the_exp_output():
    with pytest.raises(ValueError, match="poisson.*'exp'"):
        Network([3, 2], activations=["identity"], cost="poisson")
    net = Network([3, 4, 2], cost="poisson", seed=0)  # default: exp output
    assert net.activations == ["relu", "exp"]


@pytest.mark.parametrize("sizes", [[6, 2], [6, 5, 2], [6, 7, 3, 1]])
def test_kernels_match_reference(sizes):
    X, Y = poisson_data(n_out=sizes[-1], seed=len(sizes))
    ref, fast = networks(sizes, seed=1)
    np.testing.assert_allclose(fast.predict_proba(X), ref.predict_proba(X), rtol=1e-12)
    assert fast.loss(X, Y, l2=0.1) == pytest.approx(ref.loss(X, Y, l2=0.1), rel=1e-12)
    for (dW, db), (rW, rb) in zip(fast.gradients(X, Y, l2=0.1), ref.gradients(X, Y, l2=0.1)):
        np.testing.assert_allclose(dW, rW, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(db, rb, rtol=1e-10, atol=1e-13)
    # and a few epochs of training take the same steps
    for net in (ref, fast):
        net.fit(X, Y, epochs=3, batch_size=16, learning_rate=0.05, optimizer="adam",
                verbose=False, shuffle=False)
    for W, V in zip(fast.weights + fast.biases, ref.weights + ref.biases):
        np.testing.assert_allclose(W, V, rtol=1e-9, atol=1e-12)


def test_reference_loss_is_sklearns_half_deviance_and_gradient_is_exact():
    X, Y = poisson_data()
    ref = networks([6, 5, 2], seed=2)[0]
    out = ref.predict_proba(X)
    assert ref.loss(X, Y) == pytest.approx(deviance(Y, out), rel=1e-12)
    sk_base = pytest.importorskip("sklearn.neural_network._base")
    assert ref.loss(X, Y) == pytest.approx(sk_base.poisson_loss(Y, out), rel=1e-12)
    # δᴸ = (ŷ - y)/n is the derivative of that loss: central differences agree
    grads = ref.gradients(X, Y)
    eps = 1e-6
    for layer, (W, (dW, _)) in enumerate(zip(ref.weights, grads)):
        for idx in [(0, 0), (W.shape[0] - 1, W.shape[1] - 1)]:
            keep = W[idx]
            W[idx] = keep + eps
            up = ref.loss(X, Y)
            W[idx] = keep - eps
            down = ref.loss(X, Y)
            W[idx] = keep
            assert dW[idx] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)


def test_kernel_gradient_matches_sklearn_backprop():
    sk = pytest.importorskip("sklearn.neural_network")
    X, Y = poisson_data()
    net = networks([6, 5, 2], seed=3)[1]
    est = sk.MLPRegressor(hidden_layer_sizes=(5,), activation="tanh", loss="poisson",
                          alpha=0.0)
    est.coefs_ = [W.T.copy() for W in net.weights]
    est.intercepts_ = [b.copy() for b in net.biases]
    est.n_layers_, est.out_activation_, est.n_outputs_ = 3, "exp", 2
    acts = [X, None, None]
    loss, coef_grads, intercept_grads = est._backprop(X, Y, None, acts, [None, None],
                                                      [None, None], [None, None])
    assert net.loss(X, Y) == pytest.approx(loss, rel=1e-12)
    for (dW, db), cg, ig in zip(net.gradients(X, Y), coef_grads, intercept_grads):
        np.testing.assert_allclose(dW.T, cg, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(db, ig, rtol=1e-10, atol=1e-14)


def test_float32_kernels_agree_with_float64_reference():
    X, Y = poisson_data()
    ref, _ = networks([6, 5, 2], seed=4)
    fast = networks([6, 5, 2], seed=4, dtype="float32")[1]
    np.testing.assert_allclose(fast.predict_proba(X.astype(np.float32)), ref.predict_proba(X),
                               rtol=1e-5)
    assert fast.loss(X.astype(np.float32), Y) == pytest.approx(ref.loss(X, Y), rel=1e-5)
