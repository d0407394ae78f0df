"""Input validation shared by Network, the CLI and the scikit-learn wrappers.

Every public entry point converts and checks its input here, once, so that the kernels only
ever see finite, C-contiguous arrays of the right dtype and shape.
"""

import math
import numbers

import numpy as np

DTYPES = {"float32": np.float32, "float64": np.float64}


def choice(name, value, options):
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(options)}")
    return value


def positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def real(name, value, low=None, high=None, low_open=False, high_open=False):
    """A finite real number within [low, high] (ends open when asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
        hi = "" if high is None else f"{high}" + (")" if high_open else "]")
        raise ValueError(f"{name} must be in {lo or '(-inf'}, {hi or 'inf)'}, got {value!r}")
    return value


def _numeric_array(name, value):
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise ValueError(f"{name} must be a numeric array: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
    return arr


def features(X, n_features, dtype, name="X"):
    """X as a finite C-contiguous ``dtype`` array of shape ``(n, n_features)``, n >= 1."""
    arr = _numeric_array(name, X)
    if arr.ndim != 2:
        hint = " (for one sample use X.reshape(1, -1))" if arr.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (samples, features), got shape {arr.shape}{hint}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    if arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features per sample; the network expects "
                         f"{n_features}")
    out = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(out).all():
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s) "
                         f"(after conversion to {np.dtype(dtype).name})")
    return out


def targets(y, n_samples, n_outputs, dtype, name="y"):
    """Integer labels ``(n,)`` or targets ``(n, n_outputs)`` -> float target rows.

    Returns ``(Y, labels_given)``: ``Y`` is one-hot for labels. A 1-D ``y`` for a network with
    one output is a column of targets, not labels.
    """
    arr = _numeric_array(name, y)
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D labels or 2-D targets, got shape {arr.shape}")
    if arr.shape[0] != n_samples:
        raise ValueError(f"X has {n_samples} samples but {name} has {arr.shape[0]}")
    if arr.ndim == 1 and n_outputs == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim == 2:
        if arr.shape[1] != n_outputs:
            raise ValueError(f"{name} has {arr.shape[1]} columns; the network has "
                             f"{n_outputs} outputs")
        out = np.ascontiguousarray(arr, dtype=dtype)
        if not np.isfinite(out).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return out, False
    labels = labels_array(arr, n_outputs, name)
    out = np.zeros((n_samples, n_outputs), dtype=dtype)
    out[np.arange(n_samples), labels] = 1
    return out, True


def labels_array(arr, n_classes, name="y"):
    """Integer class labels in ``0 .. n_classes - 1`` (integral floats accepted)."""
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must be integer class labels; it has non-integer values")
    labels = arr.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"{name} has labels from {labels.min()} to {labels.max()}; this "
                         f"network has {n_classes} outputs, so labels must be in "
                         f"0..{n_classes - 1}")
    return labels
