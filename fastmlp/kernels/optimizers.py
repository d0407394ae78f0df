"""The optimizer step on a slice of the flat parameter vector (same rules as
:mod:`fastmlp.reference`): :mod:`.threads` gives each thread its own slice."""

import math

from numba import njit

from .._layout import ADAM, MOMENTUM, SGD  # noqa: F401  (the codes update branches on)
from .._layout import OPTIMIZER_CODES as CODES  # noqa: F401  (names -> codes)


@njit
def adam_rate(lr, beta1, beta2, step):
    """Adam's step size with the bias correction folded in (Kingma & Ba, sec. 2), for the
    update after ``step`` earlier ones."""
    t = step + 1
    return lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)


# error_model="numpy": a division is just a division (no zero check and branch per element,
# which kept this loop from vectorizing: Adam's step took 6x longer).
@njit(fastmath={"reassoc", "contract", "nsz"}, error_model="numpy")
def update(cfg, rate, params, grads, state1, state2, lo, hi):
    """``params[lo:hi]`` one step along ``-grads[lo:hi]``: ``cfg`` (a ``layout.Settings``)
    names the optimizer and its hyper-parameters, ``rate`` is this step's learning rate
    (Adam's with its bias correction, :func:`adam_rate`); ``state1`` holds the velocity or
    Adam's first moment, ``state2`` Adam's second."""
    if cfg.optimizer == SGD:
        for i in range(lo, hi):
            params[i] -= rate * grads[i]
    elif cfg.optimizer == MOMENTUM:
        # v <- μv - ηg;  θ <- θ + v  (Nesterov: θ <- θ + μv - ηg), as scikit-learn.
        mu = cfg.momentum
        for i in range(lo, hi):
            v = mu * state1[i] - rate * grads[i]
            state1[i] = v
            if cfg.nesterov:
                params[i] += mu * v - rate * grads[i]
            else:
                params[i] += v
    else:
        b1, b2, eps = cfg.beta1, cfg.beta2, cfg.eps
        for i in range(lo, hi):
            g = grads[i]
            m = b1 * state1[i] + (1 - b1) * g
            v = b2 * state2[i] + (1 - b2) * g * g
            state1[i] = m
            state2[i] = v
            params[i] -= rate * m / (math.sqrt(v) + eps)
