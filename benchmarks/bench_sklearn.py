"""``fit`` of scikit-learn's MLPClassifier against fastmlp.sklearn.MLPClassifier on MNIST.

Identical parameters (the drop-in takes scikit-learn's), the same float32 data (both keep
float32: scikit-learn computes in the dtype of X when it is float32 or float64) and the same
thread count for numba and BLAS (``FASTMLP_BENCH_THREADS``, set by conftest.py). Each fit runs
exactly ``FASTMLP_BENCH_SKLEARN_ITER`` epochs (default 10; ``n_iter_no_change`` is set so
neither stops early) on the ``FASTMLP_BENCH_SAMPLES`` first training samples (default all
60,000). One round each: a fit is long enough to time on its own. fastmlp is warmed up first on
a small subset (numba compiles or loads its on-disk cache there; ``fastmlp bench`` reports the
cold start), so the timed fit is the training itself.

``extra_info``: test accuracy on the 10,000 test images, epochs run, final ``loss_``.

    pytest benchmarks/bench_sklearn.py --benchmark-only
    FASTMLP_BENCH_SKLEARN_ITER=15 pytest benchmarks/bench_sklearn.py --benchmark-only
"""

import os
import warnings

import pytest

pytest.importorskip("sklearn", minversion="1.6")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLPClassifier  # noqa: E402

from fastmlp.bench import sklearn_fit_params  # noqa: E402
from fastmlp.sklearn import MLPClassifier  # noqa: E402

EPOCHS = int(os.environ.get("FASTMLP_BENCH_SKLEARN_ITER", "10"))
PARAMS = sklearn_fit_params(EPOCHS)  # the same comparison as `fastmlp bench`
CONTENDERS = {"scikit-learn": SkMLPClassifier, "fastmlp": MLPClassifier}


@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_fit_mnist(benchmark, mnist_train, mnist, contender):
    X, y = mnist_train
    X_test, y_test = mnist[2], mnist[3]
    make = CONTENDERS[contender]
    if contender == "fastmlp":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            make(**{**PARAMS, "max_iter": 1}).fit(X[:2000], y[:2000])  # numba: compile/load
    fitted = []

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fitted.append(make(**PARAMS).fit(X, y))

    benchmark.group = f"MLPClassifier.fit, MNIST {X.shape[0]:,} samples, {EPOCHS} epochs"
    benchmark.pedantic(fit, rounds=1, iterations=1, warmup_rounds=0)
    est = fitted[-1]
    assert est.n_iter_ == EPOCHS
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["fit_seconds"] = benchmark.stats.stats.median
    benchmark.extra_info["test_accuracy"] = float(est.score(X_test, y_test))
    benchmark.extra_info["epochs"] = est.n_iter_
    benchmark.extra_info["loss"] = float(est.loss_)
    benchmark.extra_info["params"] = {k: str(v) for k, v in PARAMS.items()}
