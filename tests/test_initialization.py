"""The starting weights' statistics, per layer kind: He-normal (variance 2 / fan_in) for ReLU
layers, Glorot-uniform (limit sqrt(6 / (fan_in + fan_out))) otherwise, zero biases. A conv
layer's fan_in is in_channels * kh * kw and its fan_out filters * kh * kw, never the product
of all its weight dimensions. Large layers make the sample statistics tight (a variance
within 5 % from 25,600 or more draws is a 5-sigma band)."""

import numpy as np
import pytest

from fastmlp import Conv2D, MaxPool2D, Network

CASES = {
    # name: (layers, activations, index of the layer checked, fan_in, fan_out)
    "dense-relu": ([400, 300, 10], ["relu", "softmax"], 0, 400, 300),
    "dense-tanh": ([400, 300, 10], ["tanh", "softmax"], 0, 400, 300),
    "dense-softmax-output": ([400, 300, 200], ["relu", "softmax"], 1, 300, 200),
    "conv-relu": ([(16, 12, 12), Conv2D(64, 5), 10], ["relu", "softmax"], 0, 16 * 25, 64 * 25),
    "conv-sigmoid": ([(16, 12, 12), Conv2D(64, 5), 10], ["sigmoid", "softmax"], 0, 16 * 25,
                     64 * 25),
    "conv-after-pool-relu": ([(16, 16, 16), MaxPool2D(2), Conv2D(80, (5, 4), padding=1), 10],
                             ["relu", "softmax"], 0, 16 * 20, 80 * 20),
}


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", list(CASES))
def test_initial_weights_have_the_layer_kinds_statistics(name, backend):
    layers, activations, k, fan_in, fan_out = CASES[name]
    net = Network(layers, activations=activations, backend=backend, dtype="float64", seed=3)
    W = np.asarray(net.weights[k], dtype=np.float64)
    assert W.size >= 25_600
    assert np.all(net.biases[k] == 0)
    assert abs(W.mean()) < 5 * W.std() / np.sqrt(W.size)
    if activations[k] == "relu":
        expected = 2.0 / fan_in
        # normal: about 4.6 % of draws lie beyond 2 standard deviations
        beyond = np.mean(np.abs(W) > 2 * np.sqrt(expected))
        assert 0.035 < beyond < 0.058, beyond
    else:
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        expected = limit ** 2 / 3  # the variance of U(-limit, limit)
        assert np.abs(W).max() <= limit
        assert np.abs(W).max() > 0.99 * limit  # uniform: it reaches the limit
    assert W.var() == pytest.approx(expected, rel=0.05), (W.var(), expected)


def test_same_seed_same_start_on_both_backends():
    layers = CASES["conv-after-pool-relu"][0]
    a = Network(layers, backend="numpy", seed=5)
    b = Network(layers, backend="numba", seed=5)
    for u, v in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(u, v)
