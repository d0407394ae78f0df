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
