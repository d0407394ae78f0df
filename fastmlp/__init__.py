"""fastmlp: multilayer perceptrons trained fast on a CPU.

``import fastmlp`` stays light: numba and the kernels load on first use of the numba backend.
"""

import os

__version__ = "0.1.0"

# Numba's OpenMP threads spin while they wait for work by default. Training launches one
# short parallel region per batch, and a spinning thread that shares its core with other
# work (another process, a hyperthread sibling) made epochs up to 50x slower on a 2-vCPU
# machine; sleeping waiters cost microseconds per batch instead. It must be set before
# numba starts its OpenMP layer, hence here; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
__all__ = ["Network", "History", "set_num_threads", "get_num_threads", "__version__"]


def __getattr__(name):
    # Lazy so that `import fastmlp` (and the CLI's --help) never pays for importing numba.
    if name in ("Network", "History"):
        from . import network

        return getattr(network, name)
    if name in ("set_num_threads", "get_num_threads"):
        from . import _threads

        return getattr(_threads, name)
    raise AttributeError(f"module 'fastmlp' has no attribute {name!r}")
