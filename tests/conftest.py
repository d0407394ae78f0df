import os
from pathlib import Path

import pytest


def shared_data_dir() -> Path:
    """The shared data folder: $FASTMLP_DATA if set, else ../shared/data beside the repo."""
    env = os.environ.get("FASTMLP_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder holding mnist/ (the four real IDX files); skips the test if they are not there."""
    root = shared_data_dir()
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    missing = [n for n in names if not any((root / "mnist" / f"{n}{s}").is_file() for s in ("", ".gz"))]
    if missing:
        pytest.skip(f"real MNIST not found in {root / 'mnist'} (missing {', '.join(missing)}); set FASTMLP_DATA")
    return root
