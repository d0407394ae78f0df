"""pytest-benchmark suites: ``pytest benchmarks/ --benchmark-only`` (see README.md).

The plain ``pytest`` run (``testpaths = ["tests"]``) never comes here. Given this folder, the
hook below collects its ``bench_*.py`` files as test modules.

The library-against-library suites (bench_epoch, bench_predict, bench_sklearn) run each
contender at each thread count in its own worker process, the same workers as ``fastmlp
bench`` (:class:`fastmlp.bench.Worker`): the worker times the whole user call and reports
it, and that time is what pytest-benchmark records (:class:`WorkerTimer`).

Environment knobs (all optional):

* ``FASTMLP_DATA``            folder holding ``mnist/`` (default: ``../shared/data`` beside
                              the repository, then the user cache).
* ``FASTMLP_BENCH_THREADS``   comma-separated thread counts, every contender runs at each
                              (default ``1,N``, N = the CPUs).
* ``FASTMLP_BENCH_SAMPLES``   training samples per epoch benchmark (default 60000).
* ``FASTMLP_BENCH_ROUNDS``    timed epochs per contender and config (default 3).
"""

import os
from pathlib import Path

import numpy as np
import pytest

from fastmlp import bench

THREADS = bench.parse_threads(os.environ.get("FASTMLP_BENCH_THREADS", "1,N"))
SAMPLES = int(os.environ.get("FASTMLP_BENCH_SAMPLES", "60000"))
ROUNDS = int(os.environ.get("FASTMLP_BENCH_ROUNDS", "3"))
LEARNING_RATE = 0.05


def pytest_collect_file(file_path, parent):
    # A file named on the command line is collected by pytest itself, whatever its name.
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def _data_dir():
    env = os.environ.get("FASTMLP_DATA")
    if env:
        return Path(env)
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    return shared if (shared / "mnist").is_dir() else None


@pytest.fixture(scope="session")
def mnist():
    """``(X_train, y_train, X_test, y_test)``; the suite skips when MNIST is not on disk."""
    from fastmlp.datasets import DatasetNotFoundError, load_mnist

    try:
        return load_mnist(_data_dir(), download=False, progress=False)
    except (DatasetNotFoundError, OSError, ValueError) as e:
        pytest.skip(f"MNIST not available ({e}); set FASTMLP_DATA")


@pytest.fixture(scope="session")
def mnist_train(mnist):
    """The first ``FASTMLP_BENCH_SAMPLES`` training samples."""
    X, y = mnist[0], mnist[1]
    return X[:SAMPLES], y[:SAMPLES]


@pytest.fixture(scope="session")
def mnist_csr(mnist):
    """The whole training set in the first layer's CSR form (as ``fit`` makes it)."""
    from fastmlp.kernels import dense

    return dense.to_csr(mnist[0])


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def rounds():
    """Timed epochs per contender and config (``FASTMLP_BENCH_ROUNDS``)."""
    return ROUNDS


@pytest.fixture(scope="session")
def workers(mnist_train, mnist, tmp_path_factory):
    """``workers(contender, threads)``: that contender's worker process, started on first use
    and kept for the session (skips when the library is not installed)."""
    path = bench.write_data(str(tmp_path_factory.mktemp("bench-data")), *mnist_train,
                            mnist[2], mnist[3])
    pool = {}

    def get(contender, threads):
        reason = bench.missing_reason(contender)
        if reason:
            pytest.skip(f"{bench.LABELS[contender]}: {reason}")
        key = (contender, threads)
        if key not in pool:
            w = bench.Worker(contender, threads, path, LEARNING_RATE)
            w.ready()
            pool[key] = w
        return pool[key]

    yield get
    for w in pool.values():
        w.close()


class WorkerTimer:
    """pytest-benchmark's timer for calls made in a worker process: the running total of the
    seconds the worker measured around each whole call, so the pipe round trip and this
    process's own time stay out of the figures. Use :meth:`install`, then time
    :meth:`call`."""

    def __init__(self, worker):
        self.worker, self.total = worker, 0.0

    def clock(self):
        return self.total

    def call(self, op, **kwargs):
        answer = self.worker.ask(op, **kwargs)
        seconds = answer["seconds"]
        self.total += sum(seconds) if isinstance(seconds, list) else seconds
        return answer

    def install(self, benchmark):
        benchmark._timer = self.clock  # read before and after each round
        benchmark.extra_info["timer"] = "whole call, timed inside the worker process"
        benchmark.extra_info["pid"] = self.worker.hello["pid"]
        benchmark.extra_info["threads"] = self.worker.threads
        return self
