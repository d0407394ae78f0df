"""argparse argument types shared by the command line (cli.py) and ``fastmlp bench``.

Standard library only, so that either can import it without importing the other."""

import argparse
import math


def _integer(low, high=None, what=None):
    """An argparse type: an integer in ``low .. high``, named ``what`` in its errors."""
    what = what or ("a positive integer" if low == 1 else f"an integer >= {low}")

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


_positive_int = _integer(1)
_nonnegative_int = _integer(0)
_port = _integer(0, 65535, "a port number 0..65535")


def _number(low=None, high=None, low_open=False, high_open=False):
    """An argparse type: a finite float in the interval given (open or closed at each end)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad = not math.isfinite(value)
        bad |= low is not None and (value <= low if low_open else value < low)
        bad |= high is not None and (value >= high if high_open else value > high)
        if bad:
            lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
            hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
            raise argparse.ArgumentTypeError(f"must be in {lo}, {hi}, got {text!r}")
        return value

    return parse
