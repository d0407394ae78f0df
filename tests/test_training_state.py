"""Resuming a run: training_state / set_training_state and fit(initial_epoch=...)."""

import numpy as np
import pytest

import fastmlp


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_resumed_run_matches_an_uninterrupted_one(tmp_path, backend, optimizer):
    rng = np.random.default_rng(0)
    X, y = rng.random((96, 12)), rng.integers(0, 3, 96)
    kw = dict(batch_size=16, learning_rate=0.05, optimizer=optimizer, dropout=0.2,
              schedule="cosine", verbose=False)

    straight = fastmlp.Network([12, 10, 3], seed=4, backend=backend)
    straight.fit(X, y, epochs=4, **kw)

    first = fastmlp.Network([12, 10, 3], seed=4, backend=backend)
    first.fit(X, y, epochs=4, callback=lambda epoch, h: epoch == 1, **kw)  # stops after 2
    first.save(tmp_path / "model.npz")
    state = first.training_state()

    resumed = fastmlp.Network.load(tmp_path / "model.npz", backend=backend)
    resumed.set_training_state(state)
    resumed.fit(X, y, epochs=4, initial_epoch=2, **kw)
    for a, b in zip(straight.weights + straight.biases, resumed.weights + resumed.biases):
        np.testing.assert_array_equal(a, b)
    assert resumed.history.learning_rate == straight.history.learning_rate
    assert resumed.history.loss == straight.history.loss


def test_initial_epoch_follows_the_schedule_and_is_checked():
    rng = np.random.default_rng(0)
    X, y = rng.random((20, 4)), rng.integers(0, 2, 20)
    for name in ("constant", "cosine", "step"):
        whole = fastmlp.Network([4, 3, 2], seed=0).fit(X, y, epochs=7, schedule=name,
                                                       verbose=False)
        tail = fastmlp.Network([4, 3, 2], seed=0).fit(X, y, epochs=7, initial_epoch=3,
                                                      schedule=name, verbose=False)
        assert tail.learning_rate == whole.learning_rate[3:]
    net = fastmlp.Network([4, 3, 2], seed=0)
    for bad in (-1, 7, 1.5, True):
        with pytest.raises(ValueError, match="initial_epoch"):
            net.fit(X, y, epochs=7, initial_epoch=bad, verbose=False)
    with pytest.raises(ValueError, match="training state"):
        net.set_training_state({"optimizer": None})
    with pytest.raises(ValueError, match="optimizer"):
        net.set_training_state({"optimizer": "lbfgs", "state": {}, "rng": None,
                                "dropout_key": 1})
