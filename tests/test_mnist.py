"""A small real run: guards against a correct-but-useless trainer."""

import numpy as np

import fastmlp
from fastmlp.datasets import load_mnist


def test_784_64_10_on_10000_mnist_images_reaches_92_percent(data_dir):
    X_train, y_train, X_test, y_test = load_mnist(data_dir, download=False)
    net = fastmlp.Network([784, 64, 10], seed=0)
    history = net.fit(X_train[:10_000], y_train[:10_000], epochs=5, batch_size=32,
                      learning_rate=0.1, verbose=False)
    scores = net.evaluate(X_test, y_test)
    assert scores["accuracy"] >= 0.92, scores
    assert history.loss[-1] < history.loss[0]
    # The prediction path agrees with evaluate's.
    assert np.mean(net.predict(X_test) == y_test) == scores["accuracy"]
