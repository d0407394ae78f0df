"""Sample weights in the ground truth: the reference backend's weighted loss and gradients
against central differences and against scikit-learn's ``_backprop``, and its training step
with scikit-learn's per-batch alpha (``alpha / (2 * the batch's weight sum)``) against
scikit-learn's own steps. Weights are non-uniform and do not sum to the sample count, so a
mean taken over ``n`` instead of over the weights shows."""

import warnings

import numpy as np
import pytest

import fastmlp
from fastmlp import Network

sk_nn = pytest.importorskip("sklearn.neural_network")

# cost, output activation, scikit-learn estimator and loss, gradient scale (scikit-learn's
# gradient over fastmlp's: its squared loss is half the mean over samples, summed over
# outputs, where fastmlp's MSE averages over outputs too)
COSTS = {
    "cross_entropy": ("softmax", "classifier", "log_loss", 1.0),
    "binary_cross_entropy": ("sigmoid", "classifier", "binary_log_loss", 1.0),
    "poisson": ("exp", "regressor", "poisson", 1.0),
    "mse": ("identity", "regressor", "squared_error", None),
}


def problem(cost, n=23, n_in=5, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_in))
    if cost == "cross_entropy":
        Y = np.eye(n_out)[rng.integers(0, n_out, n)]
    elif cost == "binary_cross_entropy":
        Y = (rng.random((n, n_out)) < 0.4).astype(float)
    elif cost == "poisson":
        Y = rng.poisson(1.5, (n, n_out)).astype(float)
    else:
        Y = rng.normal(size=(n, n_out))
    w = rng.uniform(0.1, 4.0, n)  # sums to about 2 n
    return X, Y, w


def network(cost, backend="numpy", sizes=(5, 4, 3), seed=1):
    output = COSTS[cost][0]
    return Network(list(sizes), activations=["tanh"] * (len(sizes) - 2) + [output],
                   cost=cost, backend=backend, dtype="float64", seed=seed)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("cost", list(COSTS))
def test_weighted_gradients_match_central_differences(cost, backend):
    X, Y, w = problem(cost)
    net = network(cost, backend)
    l2 = 0.3
    grads = net.gradients(X, Y, l2, sample_weight=w)
    # the loss itself: the weighted mean of the per-sample costs
    unweighted = [net.loss(X[i:i + 1], Y[i:i + 1]) for i in range(len(X))]
    assert net.loss(X, Y, sample_weight=w) == pytest.approx(np.average(unweighted, weights=w),
                                                            rel=1e-12)
    eps = 1e-6
    for (dW, db), W, b in zip(grads, net.weights, net.biases):
        for param, grad in ((W, dW), (b, db)):
            for i in np.ndindex(param.shape):
                keep = param[i]
                param[i] = keep + eps
                up = net.loss(X, Y, l2, sample_weight=w)
                param[i] = keep - eps
                down = net.loss(X, Y, l2, sample_weight=w)
                param[i] = keep
                assert grad[i] == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-9)


def sklearn_twin(cost, net, X, Y, alpha):
    """A scikit-learn MLP holding ``net``'s parameters, ready for ``_backprop``."""
    _, kind, loss_name, _ = COSTS[cost]
    if kind == "classifier":
        est = sk_nn.MLPClassifier(hidden_layer_sizes=(4,), activation="tanh", alpha=alpha)
        est.out_activation_ = "softmax" if cost == "cross_entropy" else "logistic"
    else:
        est = sk_nn.MLPRegressor(hidden_layer_sizes=(4,), activation="tanh", alpha=alpha,
                                 loss=loss_name)
        est.out_activation_ = "exp" if cost == "poisson" else "identity"
    est.coefs_ = [W.T.copy() for W in net.weights]
    est.intercepts_ = [b.copy() for b in net.biases]
    est.n_layers_, est.n_outputs_ = 3, Y.shape[1]
    return est


@pytest.mark.parametrize("cost", list(COSTS))
def test_weighted_gradients_match_sklearn_backprop(cost):
    """scikit-learn's weighted loss and gradient, alpha included (divided by the weight
    sum), are fastmlp's with ``l2 = alpha / sum(w)`` (times 2 / n_outputs for MSE)."""
    X, Y, w = problem(cost)
    net = network(cost)
    alpha = 0.7
    est = sklearn_twin(cost, net, X, Y, alpha)
    loss, coef_grads, intercept_grads = est._backprop(X, Y, w, [X, None, None], [None, None],
                                                      [None, None], [None, None])
    scale = COSTS[cost][3] or Y.shape[1] / 2.0
    l2 = alpha / w.sum() / scale
    data_loss = net.loss(X, Y, sample_weight=w) / (2 if cost == "mse" else 1)
    penalty = 0.5 * alpha * sum(float(np.sum(W ** 2)) for W in net.weights) / w.sum()
    assert data_loss + penalty == pytest.approx(loss, rel=1e-12)
    for (dW, db), cg, ig in zip(net.gradients(X, Y, l2, sample_weight=w), coef_grads,
                                intercept_grads):
        np.testing.assert_allclose(scale * dW.T, cg, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(scale * db, ig, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_per_weight_l2_training_steps_are_sklearns(backend):
    """Plain SGD over batches of 7 (the last one short) with sample weights and alpha: each
    batch's L2 term is alpha / (2 * its weight sum), the weight sum and not the batch size,
    so the steps are scikit-learn's own."""
    X, Y, w = problem("cross_entropy", n=23)
    y = Y.argmax(axis=1)
    alpha, lr = 0.8, 0.2
    net = network("cross_entropy", backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sk_nn.MLPClassifier(hidden_layer_sizes=(4,), activation="tanh", solver="sgd",
                                  momentum=0.0, learning_rate_init=lr, alpha=alpha,
                                  batch_size=7, shuffle=False, max_iter=1,
                                  random_state=0).fit(X, y)
    ref.coefs_ = [W.T.copy() for W in net.weights]
    ref.intercepts_ = [b.copy() for b in net.biases]
    for _ in range(2):
        ref.partial_fit(X, y, sample_weight=w)
    net.fit(X, Y, epochs=2, batch_size=7, learning_rate=lr, optimizer="sgd", l2=alpha,
            shuffle=False, verbose=False, sample_weight=w, _l2_per_weight=True)
    for W, b, cW, cb in zip(net.weights, net.biases, ref.coefs_, ref.intercepts_):
        np.testing.assert_allclose(W.T, cW, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(b, cb, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_huge_and_tiny_sample_weights_are_scale_free(backend):
    """The weighted mean depends only on the weights' ratios: uniform weights of 1e38 (whose
    float32 sum overflows) or 1e-200 (which float32 rounds to 0) give the unweighted loss,
    gradients and training."""
    rng = np.random.default_rng(0)
    X = rng.random((10, 64), dtype=np.float32)
    y = rng.integers(0, 4, 10)
    net = fastmlp.Network([64, 6, 4], seed=0, backend=backend)
    plain = net.loss(X, y)
    grads = net.gradients(X, y)
    for w in (np.full(10, 1e38, np.float32), np.full(10, 1e-200)):
        assert net.loss(X, y, sample_weight=w) == pytest.approx(plain, rel=1e-6)
        for (a, b), (c, d) in zip(net.gradients(X, y, sample_weight=w), grads):
            np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(b, d, rtol=1e-5, atol=1e-7)
    fits = []
    for w in (None, np.full(10, 1e37)):
        fitted = fastmlp.Network([64, 6, 4], seed=0, backend=backend)
        fitted.fit(X, y, epochs=3, batch_size=4, sample_weight=w, verbose=False)
        fits.append(fitted._params)
    np.testing.assert_allclose(fits[0], fits[1], rtol=1e-6, atol=1e-7)
