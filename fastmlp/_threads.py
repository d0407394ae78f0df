"""Thread count of the compiled kernels (numba's thread pool), and its threading layer.

fastmlp asks numba for its ``tbb`` threading layer (Intel oneTBB, the ``tbb`` package on
PyPI) unless the user chose a layer. Why tbb (measured, benchmarks/README.md, "Numba's
threading layer"):

* it is thread-safe: two Python threads may run parallel kernels at once (fastmlp's or the
  user's own ``@njit(parallel=True)`` code). numba's ``workqueue`` layer aborts the whole
  process when that happens;
* its idle workers sleep, and a fork-join costs about 2 µs (workqueue: 65-85 µs, OpenMP:
  11 µs with spinning workers that slow a busy machine and, through libgomp, PyTorch in the
  same process). Each layer's products are split between threads, so a batch costs several
  fork-joins.

pip's ``tbb`` wheel puts ``libtbb.so.12`` in ``<prefix>/lib``, where numba's ``tbbpool``
extension does not look; it is loaded here first (``RTLD_GLOBAL``) so that numba finds it.
Where tbb cannot be loaded (no wheel for the platform), fastmlp falls back to ``workqueue``
and serializes its own compiled calls with a lock (:func:`kernel_call_guard`); a user's
parallel code running beside fastmlp in another thread is then not safe, as numba's own
message says. ``fastmlp info`` shows the layer in use.
"""

import contextlib
import ctypes
import os
import sys
import threading

SAFE_LAYER = "tbb"
FALLBACK_LAYER = "workqueue"

_lock = threading.RLock()
_chosen = None  # the layer in force, once decided
_guard = None  # what kernel_call_guard returns under it (decided with the layer, once)


def _load_tbb():
    """Make ``libtbb`` loadable for numba's tbbpool; True when numba can use it."""
    names = {"linux": ["libtbb.so.12"], "darwin": ["libtbb.12.dylib"],
             "win32": ["tbb12.dll"]}.get(sys.platform, ["libtbb.so.12"])
    folders = [os.path.join(sys.prefix, "lib"), os.path.join(sys.prefix, "Library", "bin"),
               os.path.join(sys.prefix, "Lib"), ""]
    for folder in folders:
        for name in names:
            path = os.path.join(folder, name) if folder else name
            if folder and not os.path.exists(path):
                continue
            try:
                ctypes.CDLL(path, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
                break
            except OSError:
                continue
        else:
            continue
        break
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401  (numba's own tbb extension)
    except ImportError:
        return False
    return True


def use_safe_threading_layer():
    """Choose tbb (else workqueue) as numba's threading layer, if it is still undecided.

    Leaves alone: a layer the user chose (``NUMBA_THREADING_LAYER`` in the environment, or
    ``numba.config.THREADING_LAYER`` set in code) and a pool that has already started (the
    layer cannot change then). Sets no environment variable. Returns the layer now chosen
    (``"default"`` when numba picks)."""
    global _chosen, _guard
    import numba
    from numba.np.ufunc import parallel

    if ("NUMBA_THREADING_LAYER" not in os.environ and not parallel._is_initialized
            and str(numba.config.THREADING_LAYER).lower() == "default"):
        numba.config.THREADING_LAYER = SAFE_LAYER if _load_tbb() else FALLBACK_LAYER
    layer = str(numba.config.THREADING_LAYER).lower()
    if layer != _chosen:
        # workqueue, or numba's own pick ("default") where tbb cannot load, may be the
        # unsafe layer: fastmlp's calls take turns. (Decided here once, not per call.)
        unsafe = layer == "workqueue" or (layer == "default" and not _load_tbb())
        _guard = _lock if unsafe else contextlib.nullcontext()
        _chosen = layer
    return _chosen


def kernel_call_guard():
    """A context for one compiled call: nothing under a thread-safe layer; under
    ``workqueue`` (which aborts the process when two threads enter it) a process-wide lock,
    so that fastmlp's own concurrent callers take turns instead."""
    if _chosen is None:
        use_safe_threading_layer()
    return _guard


def set_num_threads(n):
    """Use ``n`` threads in the compiled kernels (1 .. the number of CPUs numba saw at start).

    Each layer's work is split between the threads so that every number is computed by one
    thread in one order: the same seed gives the same bits at any thread count.
    """
    import numbers

    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= limit:
        raise ValueError(f"threads must be an integer from 1 to {limit}, got {n!r}")
    use_safe_threading_layer()  # numba.set_num_threads starts the pool
    numba.set_num_threads(int(n))


def get_num_threads():
    import numba

    use_safe_threading_layer()  # numba.get_num_threads starts the pool
    return numba.get_num_threads()


def num_threads():
    """:func:`get_num_threads` for the compiled calls' hot path (the layer chosen once)."""
    import numba

    if _chosen is None:
        use_safe_threading_layer()
    return numba.get_num_threads()
