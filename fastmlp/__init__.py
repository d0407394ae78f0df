"""fastmlp: multilayer perceptrons and small convolutional networks trained fast on a CPU.

``import fastmlp`` stays light: numba and the kernels load on first use of the numba backend.
"""

__version__ = "0.2.0"
_LAYERS = ("Conv2D", "MaxPool2D", "AvgPool2D", "BatchNorm", "Dropout")
__all__ = ["Network", "History", *_LAYERS, "set_num_threads", "get_num_threads",
           "__version__"]

# Importing fastmlp sets no environment variable and changes no other library's behaviour.
# Numba's threading layer (thread-safe, with sleeping idle threads: see fastmlp._threads) is
# chosen when the compiled kernels are first imported (fastmlp/kernels/__init__.py).


def __getattr__(name):
    # Lazy so that `import fastmlp` (and the CLI's --help) never pays for importing numba.
    if name in ("Network", "History"):
        from . import network

        return getattr(network, name)
    if name in _LAYERS:
        from . import layers

        return getattr(layers, name)
    if name in ("set_num_threads", "get_num_threads"):
        from . import _threads

        return getattr(_threads, name)
    raise AttributeError(f"module 'fastmlp' has no attribute {name!r}")
