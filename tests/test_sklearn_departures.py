"""The scikit-learn drop-ins where they used to depart from scikit-learn or fail from inside:
a changed ``activation`` after fit, Poisson targets, solver switches under warm start,
coefs_ set by hand, the thread budget of joblib/dask workers, and ``loss_`` under sample
weights with a short last batch."""

import logging
import os
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLPClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkMLPRegressor  # noqa: E402

import fastmlp  # noqa: E402
from fastmlp import sklearn as drop_in  # noqa: E402
from fastmlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:300] / 16.0, y[:300]


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


# --- set_params(activation=...) after fit ----------------------------------------------------


@pytest.mark.parametrize("make, sk_make, method", [
    (MLPClassifier, SkMLPClassifier, "predict_proba"),
    (MLPRegressor, SkMLPRegressor, "predict"),
])
def test_activation_changed_after_fit_applies_to_the_fitted_weights(digits, make, sk_make,
                                                                    method):
    """scikit-learn reads `activation` at every forward pass: its predictions after
    set_params(activation="tanh") are those of the fitted weights through tanh."""
    X, y = digits
    ours = make(hidden_layer_sizes=(12, 7), max_iter=5, random_state=0).fit(X, y)
    theirs = sk_make(hidden_layer_sizes=(12, 7), max_iter=1, random_state=0).fit(X, y)
    for name in ("tanh", "logistic", "identity", "relu"):
        ours.set_params(activation=name)
        theirs.set_params(activation=name)
        theirs.coefs_ = [W.copy() for W in ours.coefs_]
        theirs.intercepts_ = [b.copy() for b in ours.intercepts_]
        np.testing.assert_allclose(getattr(ours, method)(X), getattr(theirs, method)(X),
                                   rtol=1e-9, atol=1e-12, err_msg=name)


def test_activation_changed_after_fit_trains_on_with_it(digits):
    """partial_fit after set_params(activation=...) trains through the new activation and
    keeps the optimizer state, as scikit-learn does."""
    X, y = digits
    kw = dict(hidden_layer_sizes=(10,), solver="sgd", learning_rate_init=0.1, shuffle=False,
              batch_size=len(y), random_state=0)
    ours = MLPClassifier(**kw).partial_fit(X, y, classes=np.arange(10))
    theirs = SkMLPClassifier(**kw).partial_fit(X, y, classes=np.arange(10))
    ours.set_params(activation="tanh")
    theirs.set_params(activation="tanh")
    ours.partial_fit(X, y)
    theirs.partial_fit(X, y)  # second step: momentum from the first, tanh forward
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


def test_unknown_activation_set_after_fit_is_a_clear_error(digits):
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=1, random_state=0).fit(X, y)
    est.set_params(activation="swish")
    with pytest.raises(ValueError, match="activation must be one of .*'swish'"):
        est.predict(X)


# --- loss="poisson" needs counts ---------------------------------------------------------


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_poisson_refuses_negative_targets(digits, solver):
    X, _ = digits
    y = np.random.default_rng(0).poisson(2.0, len(X)).astype(float)
    y[7] = -1.0
    est = MLPRegressor(hidden_layer_sizes=(5,), loss="poisson", solver=solver, max_iter=2)
    with pytest.raises(ValueError, match=r"loss='poisson' needs non-negative targets.*-1"):
        est.fit(X, y)
    with pytest.raises(ValueError, match="non-negative"):
        MLPRegressor(hidden_layer_sizes=(5,), loss="poisson").partial_fit(X, y)
    y[7] = 0.0  # zero counts are fine
    MLPRegressor(hidden_layer_sizes=(5,), loss="poisson", solver=solver, max_iter=2).fit(X, y)


# --- warm start across solvers, coefs_ set by hand ------------------------------------------


@pytest.mark.parametrize("then", ["sgd", "adam"])
def test_warm_start_from_lbfgs_to_a_stochastic_solver_goes_on_from_the_weights(digits, then):
    """scikit-learn raises AttributeError('...loss_curve_') here; warm_start's promise is to
    go on from the previous solution, so the drop-in does."""
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=5, warm_start=True,
                        random_state=0).fit(X, y)
    start = [W.copy() for W in est.coefs_]
    lbfgs_curve = list(est.loss_curve_)
    est.set_params(solver=then, max_iter=3, learning_rate_init=1e-3)
    est.fit(X, y)
    assert est.n_iter_ == 3 and len(est.loss_curve_) == len(lbfgs_curve) + 3
    assert np.isfinite(est.loss_) and est.best_loss_ == min(est.loss_curve_[-3:])
    # from the lbfgs weights: a few small steps away, not a fresh initialization
    assert max(float(np.abs(a - b).max()) for a, b in zip(est.coefs_, start)) < 0.1
    est.partial_fit(X, y)  # and partial_fit, now available, goes on too
    assert est.n_iter_ == 1
    est.set_params(solver="lbfgs", max_iter=2)
    est.fit(X, y)  # and back
    assert est.predict(X).shape == y.shape


def test_warm_start_from_lbfgs_with_early_stopping(digits):
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=3, warm_start=True,
                        random_state=0).fit(X, y)
    est.set_params(solver="adam", early_stopping=True, max_iter=2)
    est.fit(X, y)
    assert len(est.validation_scores_) == 2


@pytest.mark.parametrize("make, method", [(MLPClassifier, "predict"),
                                          (MLPClassifier, "predict_proba"),
                                          (MLPRegressor, "predict"),
                                          (MLPRegressor, "score")])
def test_predict_with_hand_set_coefs_but_never_fitted_is_not_fitted_error(digits, make,
                                                                            method):
    X, y = digits
    est = make(hidden_layer_sizes=(4,))
    est.coefs_ = [np.zeros((64, 4)), np.zeros((4, 1))]
    est.intercepts_ = [np.zeros(4), np.zeros(1)]
    args = (X, y) if method == "score" else (X,)
    with pytest.raises(NotFittedError, match="set by hand but was never fitted"):
        getattr(est, method)(*args)


# --- threads: joblib/dask workers and threadpoolctl limits --------------------------------


def _record_threads(monkeypatch):
    """Make Network.fit and predict_proba record fastmlp's thread count at their call."""
    seen = []
    real_fit, real_predict = fastmlp.Network.fit, fastmlp.Network.predict_proba

    def fit(self, *args, **kwargs):
        seen.append(("fit", fastmlp.get_num_threads()))
        return real_fit(self, *args, **kwargs)

    def predict_proba(self, *args, **kwargs):
        seen.append(("predict", fastmlp.get_num_threads()))
        return real_predict(self, *args, **kwargs)

    monkeypatch.setattr(fastmlp.Network, "fit", fit)
    monkeypatch.setattr(fastmlp.Network, "predict_proba", predict_proba)
    return seen


def test_thread_count_follows_threadpoolctl_limits_and_is_restored(digits, monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    X, y = digits
    seen = _record_threads(monkeypatch)
    before = fastmlp.get_num_threads()
    with threadpoolctl.threadpool_limits(1):
        est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=1, random_state=0).fit(X, y)
        est.predict(X[:3])
    assert seen == [("fit", 1), ("predict", 1)]
    assert fastmlp.get_num_threads() == before  # restored
    seen.clear()
    est.predict(X[:3])  # no limit: fastmlp's own count
    assert seen == [("predict", min(before, drop_in._thread_budget() or before))]


def _threads_in_worker(X, y):
    """Run in a joblib worker: the thread count the drop-in's fit gives the network."""
    import fastmlp as fm
    from fastmlp.sklearn import MLPClassifier as Est

    seen = []

    def fit(self, *args, **kwargs):  # record, do not train: no kernels to load
        seen.append(fm.get_num_threads())
        raise KeyboardInterrupt

    fm.Network.fit = fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Est(hidden_layer_sizes=(3,), max_iter=1).fit(X, y)
    import numba

    return seen[0], numba.config.NUMBA_NUM_THREADS, os.environ.get("OMP_NUM_THREADS")


def test_thread_count_is_limited_inside_a_joblib_worker(digits):
    """A joblib worker whose OpenMP/BLAS pools are limited to one thread (as dask's workers
    are: OMP_NUM_THREADS=1, NUMBA_NUM_THREADS unset) trains with one thread, not with
    every core numba sees."""
    joblib = pytest.importorskip("joblib")
    import numba

    X, y = digits
    cores = numba.config.NUMBA_NUM_THREADS
    # joblib's loky workers get NUMBA_NUM_THREADS = cores // n_jobs unless the parent set
    # it (then the parent's value); dask's get OMP_NUM_THREADS=1 and no NUMBA_NUM_THREADS.
    # This worker is dask's case: numba sees every core, OpenMP and BLAS are limited to 1.
    from joblib.externals.loky import get_reusable_executor

    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "NUMBA_NUM_THREADS": str(cores)}
    executor = get_reusable_executor(max_workers=1, env=env, reuse=False)
    try:
        threads, numba_sees, omp = executor.submit(_threads_in_worker, X, y).result(60)
    finally:
        executor.shutdown(wait=True)
    assert omp == "1" and numba_sees == cores
    assert threads == 1


# --- loss_ under sample weights with a short last batch ------------------------------------


def test_loss_with_sample_weights_and_a_short_last_batch(digits):
    """loss_ = the epoch's weighted mean cost + scikit-learn's alpha term, in which each
    batch adds alpha/2 ||W||^2 / (its weight sum) times its own length (the short last
    batch: its length, not batch_size), over n. With a vanishing learning rate the weights
    stay put, so both parts can be computed from the fitted model."""
    from sklearn.neural_network._base import LOSS_FUNCTIONS

    X, y = digits
    X, y = X[:100], y[:100]  # batches of 40, 40 and 20
    w = np.random.default_rng(1).uniform(0.2, 3.0, len(y))
    alpha = 2.0
    est = MLPClassifier(hidden_layer_sizes=(6,), solver="sgd", momentum=0.0,
                        learning_rate_init=1e-12, batch_size=40, shuffle=False, alpha=alpha,
                        max_iter=1, random_state=0).fit(X, y, sample_weight=w)
    Y = np.eye(10)[y]
    data = LOSS_FUNCTIONS["log_loss"](Y, est.predict_proba(X), w)
    squares = sum(float(np.sum(W ** 2)) for W in est.coefs_)
    starts = range(0, len(y), 40)
    lengths = [min(40, len(y) - s) for s in starts]
    sums = [w[s:s + 40].sum() for s in starts]
    penalty = sum(n * 0.5 * alpha * squares / sw for n, sw in zip(lengths, sums)) / len(y)
    assert est.loss_ == pytest.approx(data + penalty, rel=1e-9)


# --- float64 data: the compile note ----------------------------------------------------------


def test_first_float64_fit_logs_the_compile_note_once(digits, monkeypatch, caplog):
    X, y = digits
    monkeypatch.setattr(drop_in, "_float64_noted", False)
    with caplog.at_level(logging.INFO, logger="fastmlp.sklearn"):
        MLPClassifier(hidden_layer_sizes=(3,), max_iter=1).fit(X.astype(np.float32), y)
        assert not caplog.records  # float32: nothing to say
        MLPClassifier(hidden_layer_sizes=(3,), max_iter=1).fit(X, y)
        MLPClassifier(hidden_layer_sizes=(3,), max_iter=1).fit(X, y)
    notes = [r for r in caplog.records if "float64" in r.getMessage()]
    assert len(notes) == 1 and "compiles" in notes[0].getMessage()
