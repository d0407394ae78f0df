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


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_resume_carries_early_stopping(tmp_path, backend):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(120, 8)), rng.integers(0, 3, 120)  # noise: stops early
    X_val, y_val = rng.normal(size=(40, 8)), rng.integers(0, 3, 40)
    kw = dict(batch_size=8, learning_rate=0.5, validation_data=(X_val, y_val),
              early_stopping=3, verbose=False)
    straight = fastmlp.Network([8, 32, 3], seed=2, backend=backend)
    straight.fit(X, y, epochs=40, **kw)
    assert straight.history.epochs < 40  # it did stop early

    stop_at = straight.history.best_epoch + 1  # interrupt after the best, before the stop
    first = fastmlp.Network([8, 32, 3], seed=2, backend=backend)
    saved = {}

    def checkpoint(epoch, history):  # as the CLI does: save inside the epoch loop
        if epoch + 1 == stop_at:
            first.save(tmp_path / "model.npz")
            saved["state"] = first.training_state()
            return True

    first.fit(X, y, epochs=40, callback=checkpoint, **kw)
    state = saved["state"]
    assert state["early_stopping"]["since_best"] == 1
    resumed = fastmlp.Network.load(tmp_path / "model.npz", backend=backend)
    resumed.set_training_state(state)
    resumed.fit(X, y, epochs=40, initial_epoch=stop_at, **kw)
    assert resumed.history.epochs == straight.history.epochs
    assert resumed.history.best_epoch == straight.history.best_epoch
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------- fastmlp.io.check_training_state: damaged states

def _good_state():
    X = np.random.default_rng(0).random((40, 4)).astype(np.float32)
    net = fastmlp.Network([4, 5, 3], seed=0)
    net.fit(X, np.arange(40) % 3, epochs=1, batch_size=8, learning_rate=0.1, optimizer="adam",
            validation_data=(X[:8], np.arange(8) % 3), early_stopping=3, verbose=False)
    return net.training_state(), 4 * 5 + 5 + 5 * 3 + 3


def _damaged(edit):
    def make():
        state, n = _good_state()
        edit(state)
        return state, n
    return make


def _set(path, value):
    def edit(state):
        d = state
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value
    return edit


DAMAGED_STATES = {
    "not-a-dict": (lambda: ([], 43), "not a dict"),
    "no-rng": (_damaged(lambda s: s.pop("rng")), "no 'rng'"),
    "unknown-optimizer": (_damaged(_set(["optimizer"], "rmsprop")), "optimizer 'rmsprop'"),
    "optimizer-list": (_damaged(_set(["optimizer"], ["adam"])), "optimizer"),
    "state-list": (_damaged(_set(["state"], [1, 2])), "'state' is a list"),
    "short-moment": (_damaged(_set(["state", "state1"], np.zeros(7, np.float32))),
                     "has shape (7,)"),
    "2d-moment": (_damaged(_set(["state", "state1"], np.zeros((43, 1), np.float32))),
                  "has shape (43, 1)"),
    "nan-moment": (_damaged(_set(["state", "state2"], np.full(43, np.nan, np.float32))),
                   "NaN"),
    "string-moment": (_damaged(_set(["state", "state2"], np.array(["a"] * 43))), "not an array"),
    "step-string": (_damaged(_set(["state", "step"], "3")), "'step' is a str"),
    "step-negative": (_damaged(_set(["state", "step"], -1)), "negative"),
    "rng-wrong-generator": (_damaged(_set(["rng", "bit_generator"], "MT19937")), "PCG64"),
    "rng-state-float": (_damaged(_set(["rng", "state", "state"], 1.5)), "'state' and 'inc'"),
    "rng-state-huge": (_damaged(_set(["rng", "state", "inc"], 2**130)), "'state' and 'inc'"),
    "rng-uinteger": (_damaged(_set(["rng", "uinteger"], -5)), "uinteger"),
    "dropout-key-float": (_damaged(_set(["dropout_key"], 1.5)), "dropout_key"),
    "dropout-key-bool": (_damaged(_set(["dropout_key"], True)), "dropout_key"),
    "best-loss-string": (_damaged(_set(["early_stopping", "best_loss"], "low")), "best_loss"),
    "since-best-negative": (_damaged(_set(["early_stopping", "since_best"], -2)), "since_best"),
    "best-params-short": (_damaged(_set(["early_stopping", "best_params"],
                                        np.zeros(3, np.float32))), "best parameters"),
    "early-stopping-list": (_damaged(_set(["early_stopping"], [1])), "early_stopping"),
    # the schema of the compiled optimizer state: what a checkpoint must hold, in range
    "no-step": (_damaged(lambda s: s["state"].pop("step")), "has no 'step'"),
    "no-state2": (_damaged(lambda s: s["state"].pop("state2")), "has no 'state2'"),
    "step-2**70": (_damaged(_set(["state", "step"], 2**70)), "more than 2**53"),
    "step-2**63-1": (_damaged(_set(["state", "step"], 2**63 - 1)), "more than 2**53"),
    "step-float": (_damaged(_set(["state", "step"], 2.5)), "'step' is 2.5, not an integer"),
    "negative-second-moment": (_damaged(_set(["state", "state2"], np.full(43, -1e-3, np.float32))),
                               "'state2' (Adam's running mean of squared gradients) has negative"),
    "since-best-2**70": (_damaged(_set(["early_stopping", "since_best"], 2**70)), "since_best"),
}


@pytest.mark.parametrize("make, fragment", list(DAMAGED_STATES.values()),
                         ids=list(DAMAGED_STATES))
def test_check_training_state_names_what_is_wrong(make, fragment):
    from fastmlp.io import check_training_state

    state, n_params = make()
    with pytest.raises(ValueError, match="invalid training state") as info:
        check_training_state(state, n_params, "float32")
    assert fragment in str(info.value)


def test_check_training_state_accepts_real_states():
    from fastmlp.io import check_training_state

    state, n_params = _good_state()
    check_training_state(state, n_params, "float32")
    net = fastmlp.Network([4, 5, 3], seed=0)
    check_training_state(net.training_state(), n_params, "float32")  # before any fit
