"""Grid search over fastmlp's scikit-learn MLPClassifier, spread over a dask cluster.

    pip install "fastmlp[dask]"          # scikit-learn, dask[distributed], joblib
    python examples/sklearn_grid_search_dask.py

scikit-learn's GridSearchCV hands its (candidate, fold) fits to joblib; inside
``joblib.parallel_backend("dask")`` joblib sends them to the dask workers. Here the cluster is
two local worker processes. To use a real cluster instead, start a scheduler and workers
(``dask scheduler`` on one machine, ``dask worker tcp://scheduler:8786`` on each of the others)
and replace the LocalCluster below with

    client = Client("tcp://scheduler:8786")

Every worker needs fastmlp (and scikit-learn) installed, the same versions as here. Each worker
process compiles fastmlp's kernels once, on first use, and numba caches the result on disk next
to the installed package (set NUMBA_CACHE_DIR to a writable folder if that one is read-only),
so later runs on the same machine start in about a second. Give each worker process one thread
(``--nthreads 1``) and one numba thread (``NUMBA_NUM_THREADS=1``) per core, or fewer processes
with more numba threads each: the kernels use all of numba's threads.
"""

import time
import warnings

import joblib
from distributed import Client, LocalCluster
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split

from fastmlp.sklearn import MLPClassifier

GRID = {
    "hidden_layer_sizes": [(32,), (64,), (128,)],
    "alpha": [1e-4, 1e-2],
    "learning_rate_init": [1e-3, 1e-2],
}


def main():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)
    search = GridSearchCV(MLPClassifier(max_iter=100, random_state=0), GRID, cv=3)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      env={"NUMBA_NUM_THREADS": "1"}) as cluster, Client(cluster) as client:
        print("dask dashboard:", client.dashboard_link)
        started = time.perf_counter()
        with warnings.catch_warnings(), joblib.parallel_backend("dask"):
            warnings.simplefilter("ignore", ConvergenceWarning)
            search.fit(X_train, y_train)
        seconds = time.perf_counter() - started

    n_fits = len(search.cv_results_["params"]) * search.n_splits_
    print(f"{n_fits} fits on the cluster in {seconds:.1f} s")
    print(f"best parameters: {search.best_params_}")
    print(f"best cross-validation accuracy: {search.best_score_:.4f}")
    print(f"test accuracy of the refitted best model: {search.score(X_test, y_test):.4f}")


if __name__ == "__main__":  # worker processes import this module: keep the work in main()
    main()
