"""The reference's gradients are the exact derivative of its loss (central differences)."""

import numpy as np
import pytest

import fastmlp
from fastmlp import reference


@pytest.mark.parametrize("l2", [0.0, 0.7])
@pytest.mark.parametrize("activations,cost", [
    (["relu", "tanh", "softmax"], "cross_entropy"),
    (["sigmoid", "identity", "sigmoid"], "mse"),
    (["tanh", "relu", "softmax"], "mse"),
    (["identity", "sigmoid", "identity"], "mse"),
    (["relu", "tanh", "sigmoid"], "binary_cross_entropy"),
])
def test_gradients_match_central_differences(activations, cost, l2):
    rng = np.random.default_rng(0)
    net = fastmlp.Network([5, 4, 3, 3], activations, cost, backend="numpy", dtype="float64",
                          seed=1)
    X = rng.normal(size=(6, 5))
    if cost == "cross_entropy":
        Y = rng.integers(0, 3, 6)
    elif cost == "binary_cross_entropy":
        Y = (rng.random((6, 3)) < 0.5).astype(float)
    else:
        Y = rng.normal(size=(6, 3))
    grads = net.gradients(X, Y, l2=l2)
    h = 1e-6
    for params, index in ((net.weights, 0), (net.biases, 1)):
        for layer, p in enumerate(params):
            numeric = np.zeros(p.shape)
            for i in np.ndindex(p.shape):
                saved = p[i]
                p[i] = saved + h
                up = net.loss(X, Y, l2=l2)
                p[i] = saved - h
                down = net.loss(X, Y, l2=l2)
                p[i] = saved
                numeric[i] = (up - down) / (2 * h)
            np.testing.assert_allclose(grads[layer][index], numeric, rtol=1e-6, atol=1e-8)


def test_sigmoid_and_log_softmax_are_finite_at_extremes():
    z = np.array([[-1000.0, 0.0, 1000.0]])
    assert np.all(np.isfinite(reference.sigmoid(z)))
    np.testing.assert_allclose(reference.sigmoid(z), [[0, 0.5, 1]])
    assert np.all(np.isfinite(reference.log_softmax(z)))
    np.testing.assert_allclose(reference.softmax(z).sum(), 1.0)


@pytest.mark.parametrize("column", range(4))
@pytest.mark.parametrize("logit", [1000.0, -1000.0])
def test_extreme_logit_costs_in_every_column(column, logit):
    # The reference is what the kernels' extreme-logit tests (tests/test_mutations.py) compare
    # with, so it is held to closed forms here: a max taken from the wrong column, or a log of
    # an underflowed probability, gives inf/nan or the wrong number.
    z = np.zeros((4, 4))
    z[:, column] = logit
    log_p = reference.log_softmax(z)
    assert np.all(np.isfinite(log_p))
    if logit > 0:  # the extreme column takes everything; the others get e^-1000 each
        expected = np.full((4, 4), -logit)
        expected[:, column] = 0.0
    else:  # the extreme column gets e^-1000 of the mass; the other three share the rest
        expected = np.full((4, 4), -np.log(3.0))
        expected[:, column] = logit - np.log(3.0)
    np.testing.assert_allclose(log_p, expected, rtol=1e-12)
    Y = np.eye(4)  # row r's class is r
    np.testing.assert_allclose(reference.sample_costs("cross_entropy", z, None, Y),
                               -expected[np.arange(4), np.arange(4)], rtol=1e-12)
    # Binary cross-entropy, softplus form: y = 1 costs softplus(-z), y = 0 costs softplus(z);
    # softplus(1000) = 1000 and softplus(-1000) = e^-1000 ≈ 0, softplus(0) = log 2.
    ones = reference.sample_costs("binary_cross_entropy", z, None, np.ones((4, 4)))
    zeros = reference.sample_costs("binary_cross_entropy", z, None, np.zeros((4, 4)))
    np.testing.assert_allclose(ones, max(-logit, 0) + 3 * np.log(2), rtol=1e-12)
    np.testing.assert_allclose(zeros, max(logit, 0) + 3 * np.log(2), rtol=1e-12)
