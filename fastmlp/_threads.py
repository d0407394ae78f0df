"""Thread count of the compiled kernels (numba's thread pool), and its threading layer."""

import os

# Numba's threading layer when the user has not chosen one. Its default, OpenMP (GNU libgomp
# here: there is no TBB), keeps idle threads spinning between parallel regions; training runs
# one short parallel region per batch, and a spinning thread that shares its core with other
# work made epochs many times slower on a 2-vCPU machine. libgomp is also the OpenMP runtime
# that PyTorch loads (the same soname, so one copy per process): quieting it with
# OMP_WAIT_POLICY=PASSIVE, as fastmlp once did, slowed PyTorch in the same process.
# numba's own "workqueue" layer waits on a condition variable and touches nobody else.
# Measurements: benchmarks/README.md, "Numba's threading layer".
QUIET_LAYER = "workqueue"


def use_quiet_threading_layer():
    """Choose :data:`QUIET_LAYER` as numba's threading layer, if it is still undecided.

    Leaves alone: a layer the user chose (``NUMBA_THREADING_LAYER`` in the environment, or
    ``numba.config.THREADING_LAYER`` set in code) and a pool that has already started (the
    layer cannot change then). Sets no environment variable. Returns the layer now chosen
    (``"default"`` when numba picks)."""
    import numba
    from numba.np.ufunc import parallel

    if ("NUMBA_THREADING_LAYER" not in os.environ and not parallel._is_initialized
            and str(numba.config.THREADING_LAYER).lower() == "default"):
        numba.config.THREADING_LAYER = QUIET_LAYER
    return str(numba.config.THREADING_LAYER)


def set_num_threads(n):
    """Use ``n`` threads in the compiled kernels (1 .. the number of CPUs numba saw at start).

    Training splits each batch into one part per thread and sums the parts' gradients in a
    fixed order: the same seed and thread count give the same bits; another thread count
    differs only by float rounding.
    """
    import numbers

    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= limit:
        raise ValueError(f"threads must be an integer from 1 to {limit}, got {n!r}")
    use_quiet_threading_layer()  # numba.set_num_threads starts the pool
    numba.set_num_threads(int(n))


def get_num_threads():
    import numba

    use_quiet_threading_layer()  # numba.get_num_threads starts the pool
    return numba.get_num_threads()
