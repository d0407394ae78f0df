"""A scikit-learn grid search over fastmlp.sklearn.MLPClassifier, run on a dask cluster.

The cluster's workers are separate processes: each imports fastmlp and loads the compiled
kernels from numba's on-disk cache (``cache=True``, next to the kernels' source) that the local
search below has just filled, so no worker compiles from scratch. Each worker runs one task at a
time on one numba thread (two workers, two cores), and the local search uses one thread too, so
the distributed search must score every candidate exactly as the local one does.
"""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")
pytest.importorskip("distributed", reason="dask.distributed is not installed "
                                          "(pip install 'dask[distributed]')")

import joblib  # noqa: E402
import numba  # noqa: E402
from distributed import Client, LocalCluster, get_task_stream  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

from fastmlp.sklearn import MLPClassifier  # noqa: E402

GRID = {"hidden_layer_sizes": [(16,), (32,)], "alpha": [1e-4, 1e-1]}


def grid_search():
    estimator = MLPClassifier(learning_rate_init=0.01, max_iter=40, tol=1e-3,
                              n_iter_no_change=3, random_state=0)
    return GridSearchCV(estimator, GRID, cv=3)


def test_grid_search_on_dask_matches_local_search():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            local = grid_search().fit(X, y)  # n_jobs=None: this process; warms numba's cache
    finally:
        numba.set_num_threads(threads)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                      env={"NUMBA_NUM_THREADS": "1"}) as cluster, Client(cluster) as client:
        assert set(client.run(numba.get_num_threads).values()) == {1}
        with warnings.catch_warnings(), get_task_stream(client) as tasks, \
                joblib.parallel_backend("dask"):
            warnings.simplefilter("ignore", ConvergenceWarning)
            remote = grid_search().fit(X, y)
        assert len(tasks.data) >= len(local.cv_results_["params"]) * 3  # fits ran on workers
        workers = {task["worker"] for task in tasks.data}
    assert len(workers) == 2
    for key in ("mean_test_score", "std_test_score", "rank_test_score"):
        np.testing.assert_array_equal(remote.cv_results_[key], local.cv_results_[key])
    for key in ("split0_test_score", "split1_test_score", "split2_test_score"):
        np.testing.assert_array_equal(remote.cv_results_[key], local.cv_results_[key])
    assert remote.best_params_ == local.best_params_
    assert remote.best_score_ == local.best_score_ > 0.85
    np.testing.assert_array_equal(remote.predict(X), local.predict(X))
