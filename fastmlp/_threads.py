"""Thread count of the compiled kernels (numba's thread pool)."""


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
    numba.set_num_threads(int(n))


def get_num_threads():
    import numba

    return numba.get_num_threads()
