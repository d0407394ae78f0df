"""The scikit-learn drop-in beyond adam/sgd: lbfgs, sample_weight, sparse input, the poisson
loss, divergence, custom initialization and dropout; side by side with scikit-learn wherever
it is deterministic."""

import inspect
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")
sparse = pytest.importorskip("scipy.sparse")

from sklearn.datasets import load_digits, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLPClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkMLPRegressor  # noqa: E402
from sklearn.utils._param_validation import InvalidParameterError  # noqa: E402

from fastmlp import Network  # noqa: E402
from fastmlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

NETWORK_WEIGHTS = "sample_weight" in inspect.signature(Network.fit).parameters
needs_weighted_network = pytest.mark.skipif(
    not NETWORK_WEIGHTS, reason="fastmlp.Network.fit has no sample_weight yet")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:500] / 16.0, y[:500]


def max_difference(a, b):
    return max(float(np.abs(u - v).max()) for u, v in zip(a.coefs_ + a.intercepts_,
                                                          b.coefs_ + b.intercepts_))


def both(make_ours, make_theirs, params, *fit_args, **fit_kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return (make_ours(**params).fit(*fit_args, **fit_kwargs),
                make_theirs(**params).fit(*fit_args, **fit_kwargs))


def poisson_targets(n, k=1, seed=0):
    return np.random.default_rng(seed).poisson(2.0, size=(n, k)).astype(float).squeeze()


# --- lbfgs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["multiclass", "binary"])
@pytest.mark.parametrize("max_iter", [5, 100])
def test_lbfgs_classifier_matches_sklearn(digits, kind, max_iter):
    X, y = digits
    y = (y > 4).astype(int) if kind == "binary" else y
    params = dict(solver="lbfgs", hidden_layer_sizes=(16,), max_iter=max_iter,
                  random_state=0, alpha=1e-3)
    ours, theirs = both(MLPClassifier, SkMLPClassifier, params, X, y)
    assert max_difference(ours, theirs) < 1e-8
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
    assert len(ours.loss_curve_) == ours.n_iter_ and ours.loss_curve_[-1] == pytest.approx(
        ours.loss_)  # beyond scikit-learn, which keeps no curve for lbfgs
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


@pytest.mark.parametrize("loss, n_targets", [("squared_error", 3), ("poisson", 2)])
def test_lbfgs_regressor_matches_sklearn(loss, n_targets):
    X, Y = make_regression(200, 5, n_targets=n_targets, random_state=0)
    Y = Y / 100 if loss == "squared_error" else poisson_targets(200, n_targets)
    params = dict(solver="lbfgs", hidden_layer_sizes=(8,), activation="tanh", max_iter=30,
                  random_state=0, alpha=1e-2, loss=loss)
    ours, theirs = both(MLPRegressor, SkMLPRegressor, params, X, Y)
    assert max_difference(ours, theirs) < 1e-9
    assert ours.n_iter_ == theirs.n_iter_ and ours.loss_ == pytest.approx(theirs.loss_, 1e-9)


def test_lbfgs_with_sample_weight_matches_sklearn(digits):
    X, y = digits
    sw = np.random.default_rng(1).random(len(y)) * 2
    params = dict(solver="lbfgs", hidden_layer_sizes=(16,), max_iter=20, random_state=0,
                  alpha=1e-3)
    ours, theirs = both(MLPClassifier, SkMLPClassifier, params, X, y, sample_weight=sw)
    assert max_difference(ours, theirs) < 1e-9
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)


def test_lbfgs_warnings_warm_start_and_options(digits):
    X, y = digits
    est = MLPClassifier(solver="lbfgs", hidden_layer_sizes=(8,), max_iter=3, random_state=0,
                        warm_start=True)
    with pytest.warns(ConvergenceWarning, match=r"lbfgs failed to converge after 3 iter"):
        est.fit(X, y)
    first = est.loss_
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)  # continues from the fitted weights
    assert est.loss_ < first and est.n_iter_ == 3
    theirs = SkMLPClassifier(solver="lbfgs", hidden_layer_sizes=(8,), max_iter=3,
                             random_state=0, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs.fit(X, y).fit(X, y)
    assert max_difference(est, theirs) < 1e-9
    # max_fun stops it too
    with pytest.warns(ConvergenceWarning, match="STOP: TOTAL NO. OF F,G EVALUATIONS"):
        MLPClassifier(solver="lbfgs", hidden_layer_sizes=(8,), max_fun=4,
                      random_state=0).fit(X, y)
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")
    for bad, match in [(dict(max_fun=0), "'max_fun' parameter"),
                       (dict(max_iter=0), "'max_iter' parameter"),
                       (dict(tol=-1.0), "'tol' parameter")]:
        with pytest.raises(InvalidParameterError, match=match):
            MLPClassifier(solver="lbfgs", **bad).fit(X, y)


# --- sample_weight ---------------------------------------------------------------------------


@pytest.mark.parametrize("make", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_bad_sample_weights_raise_sklearns_errors(digits, make, solver):
    X, y = digits
    y = y if make is MLPClassifier else y.astype(float)
    est = make(hidden_layer_sizes=(4,), max_iter=2, solver=solver)
    cases = [(np.ones(len(y) - 1), r"sample_weight.shape == \(499,\), expected \(500,\)!"),
             (np.r_[np.nan, np.ones(len(y) - 1)], "Input sample_weight contains NaN"),
             (np.r_[np.inf, np.ones(len(y) - 1)], "Input sample_weight contains infinity"),
             (np.zeros(len(y)), "Sample weights must contain at least one non-zero number"),
             (np.r_[-1.0, np.ones(len(y) - 1)], "Negative values in data passed to "
                                                "`sample_weight`")]
    for sw, match in cases:
        with pytest.raises(ValueError, match=match):
            est.fit(X, y, sample_weight=sw)


def test_partial_fit_takes_sklearns_argument_order():
    for ours, theirs in [(MLPClassifier, SkMLPClassifier), (MLPRegressor, SkMLPRegressor)]:
        assert (list(inspect.signature(ours.partial_fit).parameters)
                == list(inspect.signature(theirs.partial_fit).parameters))
        assert (list(inspect.signature(ours.fit).parameters)
                == list(inspect.signature(theirs.fit).parameters))


@needs_weighted_network
@pytest.mark.parametrize("make, theirs_make", [(MLPClassifier, SkMLPClassifier),
                                               (MLPRegressor, SkMLPRegressor)])
def test_sample_weight_matches_sklearn_update_for_update(digits, make, theirs_make):
    X, y = digits
    y = y if make is MLPClassifier else y.astype(float) / 10
    sw = np.random.default_rng(0).random(len(y)) * 3
    # batches of 64 leave a short last batch: its L2 term is scikit-learn's too
    params = dict(hidden_layer_sizes=(16,), max_iter=4, random_state=0, shuffle=False,
                  batch_size=64, alpha=0.05)
    ours, theirs = both(make, theirs_make, params, X, y, sample_weight=sw)
    assert max_difference(ours, theirs) < 1e-9
    # loss_ weighs the epoch's costs by the weights; scikit-learn averages the batches' means
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=0.1)
    # partial_fit with weights, scikit-learn's argument order
    ours, theirs = make(**params), theirs_make(**params)
    extra = {"classes": np.arange(10)} if make is MLPClassifier else {}
    ours.partial_fit(X, y, sw, **extra)
    theirs.partial_fit(X, y, sw, **extra)
    assert max_difference(ours, theirs) < 1e-9


@needs_weighted_network
def test_sample_weight_early_stopping_matches_sklearn(digits):
    X, y = digits
    sw = np.random.default_rng(2).random(len(y)) + 0.5
    params = dict(hidden_layer_sizes=(16,), random_state=0, shuffle=False, batch_size=50,
                  early_stopping=True, n_iter_no_change=3)
    ours, theirs = both(MLPClassifier, SkMLPClassifier, params, X, y, sample_weight=sw)
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
    assert max_difference(ours, theirs) < 1e-9


def test_short_last_batch_l2_matches_sklearn(digits):
    X, y = digits  # 500 samples in batches of 64: the last has 52
    params = dict(hidden_layer_sizes=(16,), max_iter=3, random_state=0, shuffle=False,
                  batch_size=64, alpha=0.5)
    ours, theirs = both(MLPClassifier, SkMLPClassifier, params, X, y)
    assert max_difference(ours, theirs) < 1e-9


# --- sparse input ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "lil", "dok", "bsr"])
def test_any_sparse_format_gives_the_dense_results(digits, fmt):
    X, y = digits
    Xs = sparse.csr_matrix(X).asformat(fmt)
    params = dict(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dense = MLPClassifier(**params).fit(X, y)
        sp = MLPClassifier(**params).fit(Xs, y)
    assert max_difference(dense, sp) < 1e-12
    np.testing.assert_allclose(sp.predict_proba(Xs), dense.predict_proba(X), rtol=1e-10)
    assert sp.score(Xs, y) == dense.score(X, y)


def test_sparse_goes_to_the_network_as_csr(monkeypatch, digits):
    X, y = digits
    seen = []
    real_fit = Network.fit

    def spy(self, X, *args, **kwargs):
        seen.append(X)
        return real_fit(self, X, *args, **kwargs)

    monkeypatch.setattr(Network, "fit", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=1).fit(sparse.coo_matrix(X), y)
    assert sparse.issparse(seen[0]) and seen[0].format == "csr"  # never densified


def test_sparse_with_nan_raises_sklearns_error(digits):
    X, y = digits
    Xs = sparse.csr_matrix(X)
    Xs.data[0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        MLPClassifier().fit(Xs, y)


# --- poisson ---------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_poisson_regressor_matches_sklearn_update_for_update(solver):
    X, _ = make_regression(300, 6, random_state=0)
    X /= 10
    y = poisson_targets(300)
    params = dict(loss="poisson", hidden_layer_sizes=(16,), max_iter=4, random_state=0,
                  shuffle=False, batch_size=50, alpha=0.01, solver=solver,
                  learning_rate_init=0.01)
    ours, theirs = both(MLPRegressor, SkMLPRegressor, params, X, y)
    assert ours.out_activation_ == theirs.out_activation_ == "exp"
    assert max_difference(ours, theirs) < 1e-9
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-3)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-8)
    assert (ours.predict(X) > 0).all()


# --- divergence, custom initialization -------------------------------------------------------


def test_divergence_with_early_stopping_is_sklearns():
    X, y = make_regression(300, 5, random_state=0)
    params = dict(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=10.0,
                  early_stopping=True, max_iter=15, random_state=0, shuffle=False)
    ours, theirs = both(MLPRegressor, SkMLPRegressor, params, X, y)  # no ValueError
    assert ours.n_iter_ == theirs.n_iter_ == 15
    assert len(ours.validation_scores_) == 15
    assert np.isnan(ours.validation_scores_[-1]) and np.isnan(theirs.validation_scores_[-1])
    assert ours.best_validation_score_ == pytest.approx(theirs.best_validation_score_)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-7)  # the best epoch's (huge, finite) weights
    del params["early_stopping"]
    for make in (MLPRegressor, SkMLPRegressor):
        with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                make(**params).fit(X, y)


def test_coefs_set_before_partial_fit_are_the_start(digits):
    X, y = digits
    rng = np.random.default_rng(0)
    coefs = [rng.normal(0, 0.1, (64, 12)), rng.normal(0, 0.1, (12, 10))]
    intercepts = [np.zeros(12), np.zeros(10)]
    est = MLPClassifier(hidden_layer_sizes=(12,), solver="sgd", learning_rate_init=0.1,
                        momentum=0.0, shuffle=False, batch_size=len(y))
    est.coefs_, est.intercepts_ = [c.copy() for c in coefs], [b.copy() for b in intercepts]
    est.partial_fit(X, y, classes=np.arange(10))
    # one full-batch sgd step from the given start, done by hand with scikit-learn's math
    ref = SkMLPClassifier(hidden_layer_sizes=(12,), solver="sgd", learning_rate_init=0.1,
                          momentum=0.0, shuffle=False, batch_size=len(y), max_iter=1,
                          random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(X, y)
    ref.coefs_, ref.intercepts_ = [c.copy() for c in coefs], [b.copy() for b in intercepts]
    ref.partial_fit(X, y)
    assert max_difference(est, ref) < 1e-9
    wrong = MLPClassifier(hidden_layer_sizes=(12,))
    wrong.coefs_, wrong.intercepts_ = [np.zeros((3, 12)), np.zeros((12, 10))], intercepts
    with pytest.raises(ValueError, match=r"coefs_ set before fitting have shapes"):
        wrong.partial_fit(X, y, classes=np.arange(10))


def test_loss_types_are_sklearns(digits):
    X, y = digits
    ours, theirs = both(MLPClassifier, SkMLPClassifier,
                        dict(hidden_layer_sizes=(8,), max_iter=2, random_state=0), X, y)
    assert type(ours.loss_) is type(theirs.loss_)
    assert type(ours.best_loss_) is type(theirs.best_loss_)


# --- dropout (beyond scikit-learn) -----------------------------------------------------------


def test_dropout_trains_and_changes_the_steps(digits):
    X, y = digits
    params = dict(hidden_layer_sizes=(32,), max_iter=20, learning_rate_init=0.01, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = MLPClassifier(**params).fit(X, y)
        dropped = MLPClassifier(dropout=0.3, **params).fit(X, y)
        again = MLPClassifier(dropout=(0.3,), **params).fit(X, y)
        reg = MLPRegressor(dropout=0.2, **params).fit(X, y.astype(float))
    assert max_difference(plain, dropped) > 1e-3
    assert max_difference(dropped, again) == 0  # a per-layer list of one rate is the rate
    assert dropped.score(X, y) > 0.8 and np.isfinite(reg.loss_)
    assert dropped.get_params()["dropout"] == 0.3


@pytest.mark.parametrize("dropout, match", [
    (1.0, "'dropout' parameter"), (-0.1, "'dropout' parameter"),
    ((0.1, 0.2, 0.3), r"one such float per hidden layer \(2\)"),
])
def test_bad_dropout(digits, dropout, match):
    with pytest.raises(ValueError, match=match):
        MLPClassifier(hidden_layer_sizes=(8, 8), dropout=dropout).fit(*digits)


def test_dropout_per_hidden_layer(digits):
    """A list gives each hidden layer its own rate: (0, 0.5) drops only the second layer's
    units, so it trains differently from (0.5, 0) and from no dropout, and the network's
    fit gets the same list."""
    X, y = digits
    params = dict(hidden_layer_sizes=(16, 16), max_iter=3, random_state=0, batch_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits = {rates: MLPClassifier(dropout=rates, **params).fit(X, y)
                for rates in ((0.0, 0.0), (0.0, 0.5), (0.5, 0.0), (0.5, 0.5))}
    assert max_difference(fits[(0.0, 0.0)], MLPClassifier(**params).fit(X, y)) == 0
    for a, b in [((0.0, 0.5), (0.5, 0.0)), ((0.0, 0.5), (0.0, 0.0)), ((0.5, 0.0), (0.5, 0.5))]:
        assert max_difference(fits[a], fits[b]) > 1e-3
    assert all(np.isfinite(f.loss_) for f in fits.values())


def test_dropout_needs_a_stochastic_solver(digits):
    with pytest.raises(ValueError, match="dropout=0.5 needs a stochastic solver"):
        MLPClassifier(solver="lbfgs", dropout=0.5).fit(*digits)
