"""pytest-benchmark suites: ``pytest benchmarks/ --benchmark-only`` (see README.md).

The plain ``pytest`` run (``testpaths = ["tests"]``) never comes here. Given this folder, the
hook below collects its ``bench_*.py`` files as test modules.

Environment knobs (all optional):

* ``FASTMLP_DATA``            folder holding ``mnist/`` (default: ``../shared/data`` beside
                              the repository, then the user cache).
* ``FASTMLP_BENCH_THREADS``   threads for numba, torch and BLAS alike (default 2).
* ``FASTMLP_BENCH_SAMPLES``   training samples per epoch benchmark (default 60000).
* ``FASTMLP_BENCH_ROUNDS``    timed epochs per contender and config (default 3).
"""

import os
from pathlib import Path

import numpy as np
import pytest

from fastmlp import bench

THREADS = int(os.environ.get("FASTMLP_BENCH_THREADS", "2"))
SAMPLES = int(os.environ.get("FASTMLP_BENCH_SAMPLES", "60000"))
ROUNDS = int(os.environ.get("FASTMLP_BENCH_ROUNDS", "3"))


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


@pytest.fixture(scope="session", autouse=True)
def same_threads():
    """Every library runs with ``FASTMLP_BENCH_THREADS`` threads for the whole session."""
    with bench.limit_threads(THREADS) as applied:
        yield applied


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def rounds():
    """Timed epochs per contender and config (``FASTMLP_BENCH_ROUNDS``)."""
    return ROUNDS


@pytest.fixture(scope="session")
def skip_missing():
    """``skip_missing(contender)`` skips the test when a peer library is not installed."""
    def skip(contender):
        reason = bench.missing_reason(contender)
        if reason:
            pytest.skip(f"{bench.LABELS[contender]}: {reason}")

    return skip
