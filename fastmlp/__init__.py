"""fastmlp: multilayer perceptrons trained fast on a CPU.

``import fastmlp`` stays light: numba and the kernels load on first use of the numba backend.
"""

__version__ = "0.1.0"
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
