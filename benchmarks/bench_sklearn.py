"""``fit`` of scikit-learn's MLPClassifier against fastmlp.sklearn.MLPClassifier on MNIST.

Identical parameters (the drop-in takes scikit-learn's; :func:`fastmlp.bench.sklearn_fit_params`,
the same comparison as ``fastmlp bench``), the same float32 data, each estimator in its own
worker process (conftest.py) at every ``FASTMLP_BENCH_THREADS``. Each fit runs exactly
``FASTMLP_BENCH_SKLEARN_ITER`` epochs (default 10; ``n_iter_no_change`` is set so neither
stops early) on the ``FASTMLP_BENCH_SAMPLES`` first training samples (default all 60,000).
One round each: a fit is long enough to time on its own. The fastmlp worker fits once on a
small subset first, untimed (numba compiles or loads its on-disk cache there).

``extra_info``: test accuracy on the 10,000 test images.

    pytest benchmarks/bench_sklearn.py --benchmark-only
    FASTMLP_BENCH_SKLEARN_ITER=15 pytest benchmarks/bench_sklearn.py --benchmark-only
"""

import os

import pytest
from conftest import THREADS, WorkerTimer

from fastmlp.bench import missing_reason, sklearn_fit_params

if missing_reason("sklearn"):
    pytest.skip(missing_reason("sklearn"), allow_module_level=True)

EPOCHS = int(os.environ.get("FASTMLP_BENCH_SKLEARN_ITER", "10"))
PARAMS = sklearn_fit_params(EPOCHS)
# estimator -> the worker that fits it
CONTENDERS = {"scikit-learn": "sklearn", "fastmlp": "numba"}


@pytest.mark.parametrize("threads", THREADS, ids=[f"t{t}" for t in THREADS])
@pytest.mark.parametrize("estimator", list(CONTENDERS))
def test_fit_mnist(benchmark, mnist_train, workers, estimator, threads):
    w = workers(CONTENDERS[estimator], threads)
    timer = WorkerTimer(w).install(benchmark)
    answers = []
    benchmark.group = (f"MLPClassifier.fit, MNIST {mnist_train[0].shape[0]:,} samples, "
                       f"{EPOCHS} epochs")
    benchmark.pedantic(lambda: answers.append(timer.call("sklearn_fit", params=PARAMS)),
                       rounds=1, iterations=1, warmup_rounds=0)
    assert 0 <= answers[-1]["accuracy"] <= 1
    benchmark.extra_info["test_accuracy"] = answers[-1]["accuracy"]
    benchmark.extra_info["params"] = {k: str(v) for k, v in PARAMS.items()}
