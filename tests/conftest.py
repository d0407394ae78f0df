import os
from pathlib import Path

import pytest

# Tests change the working directory (tmp_path); a relative FASTMLP_DATA such as the
# README's ../shared/data must keep pointing where it pointed when pytest started.
if os.environ.get("FASTMLP_DATA"):
    os.environ["FASTMLP_DATA"] = str(Path(os.environ["FASTMLP_DATA"]).resolve())

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


def shared_data_dir() -> Path:
    """The shared data folder: $FASTMLP_DATA if set, else ../shared/data beside the repo."""
    env = os.environ.get("FASTMLP_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder holding mnist/ (the four real IDX files).

    When FASTMLP_DATA names a folder without them the tests fail (CI must not pass by
    skipping); with nothing configured and no ../shared/data they skip with the reason."""
    root = shared_data_dir()
    missing = [n for n in MNIST_FILES
               if not any((root / "mnist" / f"{n}{s}").is_file() for s in ("", ".gz"))]
    if missing:
        message = (f"real MNIST not found in {root / 'mnist'} (missing {', '.join(missing)}); "
                   "set FASTMLP_DATA to the folder that holds mnist/")
        if os.environ.get("FASTMLP_DATA"):
            pytest.fail(message)
        pytest.skip(message)
    return root


_MNIST_CACHE = {}


@pytest.fixture
def mnist(data_dir, monkeypatch):
    """The real data folder, with the CLI's loader memoized for the whole session: MNIST is
    decompressed once however many CLI tests run."""
    from fastmlp import cli

    real = cli._load_data

    def cached(dataset, folder, categories=None, download=True, progress=True):
        key = (dataset, str(folder), tuple(categories or ()))
        if key not in _MNIST_CACHE:
            _MNIST_CACHE[key] = real(dataset, folder, categories, download, progress)
        return _MNIST_CACHE[key]

    monkeypatch.setattr(cli, "_load_data", cached)
    return data_dir


def pytest_sessionstart(session):
    """Say up front that a cold numba cache makes the first tests slow (pytest -q is otherwise
    silent while the kernels compile), and where the cache is: the source tree and an
    installed copy of the same code share it, so the CLI subprocesses do not compile again."""
    try:
        from fastmlp.kernels import _cache
    except ImportError:  # numba missing: the tests will say so
        return
    folder = _cache.cache_folders()[0]
    state = "warm" if os.path.isdir(folder) and os.listdir(folder) else \
        "empty: the first tests compile the kernels, a few minutes on 2 cores"
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"fastmlp compiled kernels: {folder} ({state})")
