"""Input validation shared by Network, the CLI and the scikit-learn wrappers.

Every public entry point converts and checks its input here, once, so that the kernels only
ever see finite, C-contiguous arrays of the right dtype and shape.
"""

import math
import numbers

import numpy as np

DTYPES = {"float32": np.float32, "float64": np.float64}
BACKENDS = ("numba", "numpy")
OPTIMIZERS = ("sgd", "momentum", "adam")


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
        if arr.dtype.kind == "O" and arr.ndim == 0:  # not array-like at all: None, a dict...
            hint = " (use .toarray() for a sparse matrix)" if hasattr(value, "toarray") else ""
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ValueError(f"{name} must hold numbers, got {shown} "
                             f"({type(value).__name__}){hint}")
        raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
    return arr


def _first_bad(mask):
    """Index tuple of the first True in ``mask``."""
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _index(name, where):
    return f"{name}[{', '.join(map(str, where))}]"


def _value(arr, where):
    """``arr[where]`` as a plain Python number, for messages (``1e+300``, not ``np.float64``)."""
    return arr[where].item()


def _finite_cast(name, arr, dtype):
    """``arr`` as a C-contiguous ``dtype`` array, or ValueError naming the first bad value.

    Values that are finite but too large for ``dtype`` (1e300 into float32) are reported as
    overflow, not silently turned into inf. The result is always writeable: numba types a
    read-only array differently, and would compile every kernel a second time for it.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(arr, dtype=dtype)
    if not out.flags.writeable:
        out = out.copy()
    # Integers and booleans always fit a float32 and are never NaN: skip the scan (MNIST is
    # uint8). Otherwise one pass finds any problem; the details are worked out only then.
    if arr.dtype.kind in "biu" or np.isfinite(out).all():
        return out
    bad = ~np.isfinite(out)
    if bad.any():
        where = _first_bad(bad)
        original = _value(arr, where)
        count = int(np.count_nonzero(bad))
        if math.isfinite(original):
            raise ValueError(
                f"{name} has {count} value(s) too large for {np.dtype(dtype).name} "
                f"(overflow), first {_index(name, where)} = {original!r}; the largest is "
                f"{float(np.finfo(dtype).max):.3g}")
        raise ValueError(f"{name} contains {count} NaN or infinite value(s), first "
                         f"{_index(name, where)} = {original!r}")
    return out


class CSR:
    """A checked sparse input: CSR arrays of a ``(rows, cols)`` matrix with sorted-or-not
    column indices, finite values of the network's dtype (what the first layer reads)."""

    def __init__(self, indptr, indices, data, shape):
        self.indptr, self.indices, self.data, self.shape = indptr, indices, data, shape

    def toarray(self):
        out = np.zeros(self.shape, dtype=self.data.dtype)
        rows = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        np.add.at(out, (rows, self.indices), self.data)
        return out

    def __getitem__(self, rows):
        """The rows ``rows`` (an index array) as another CSR."""
        rows = np.asarray(rows)
        counts = np.diff(self.indptr)[rows]
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        take = np.concatenate([np.arange(self.indptr[r], self.indptr[r + 1]) for r in rows]) \
            if rows.size else np.zeros(0, np.int64)
        return CSR(indptr, self.indices[take], self.data[take], (rows.size, self.shape[1]))


def _is_sparse(X):
    return hasattr(X, "tocsr") and hasattr(X, "nnz") and hasattr(X, "shape")


def sparse_features(X, n_features, dtype, name="X"):
    """A scipy sparse matrix (any format) as a checked :class:`CSR`, never densified."""
    if len(X.shape) != 2:
        raise ValueError(f"{name} must be 2-D (samples, features), got shape {X.shape}")
    _check_rows(name, X.shape, n_features)
    csr = X.tocsr()
    data = _numeric_array(f"{name}.data", csr.data)
    data = _finite_cast(f"{name} (stored values)", data, dtype)
    indptr = np.ascontiguousarray(csr.indptr, dtype=np.int64)
    indices = np.ascontiguousarray(csr.indices, dtype=np.int32)
    return CSR(indptr, indices, data, (int(X.shape[0]), int(X.shape[1])))


def features(X, n_features, dtype, name="X", shape=None, sparse=False):
    """X as a finite C-contiguous ``dtype`` array of shape ``(n, n_features)``, n >= 1.

    With an image ``shape (C, H, W)`` also ``(n, C, H, W)`` and, for ``C == 1``, ``(n, H, W)``
    (flattened in that order). With ``sparse`` a scipy sparse matrix becomes a
    :class:`CSR`; without, it is refused with a hint."""
    if sparse and _is_sparse(X):
        return sparse_features(X, n_features, dtype, name)
    arr = _numeric_array(name, X)
    if shape is not None and arr.ndim in (3, 4) and arr.shape[0] > 0:
        image = tuple(arr.shape[1:])
        if image == tuple(shape) or (arr.ndim == 3 and shape[0] == 1
                                     and image == tuple(shape[1:])):
            arr = arr.reshape(arr.shape[0], -1)
        else:
            raise ValueError(f"{name} has images of shape {image}; the network expects "
                             f"{tuple(shape)}" + (f" or {tuple(shape[1:])}" if shape[0] == 1
                                                  else "")
                             + f" (or flat rows of {n_features} values)")
    if arr.ndim != 2:
        hint = " (for one sample use X.reshape(1, -1))" if arr.ndim == 1 else ""
        expect = "(samples, features)" if shape is None else \
            f"(samples, features) or (samples, {', '.join(map(str, shape))})"
        raise ValueError(f"{name} must be 2-D {expect}, got shape {arr.shape}{hint}")
    _check_rows(name, arr.shape, n_features)
    return _finite_cast(name, arr, dtype)


def _check_rows(name, shape, n_features):
    """A 2-D input (dense or sparse) has samples, each with the network's feature count."""
    if shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {shape}, it needs at least one sample")
    if shape[1] != n_features:
        raise ValueError(f"{name} has {shape[1]} features per sample; the network expects "
                         f"{n_features}")


def sample_weights(w, n_samples, dtype, name="sample_weight", return_scale=False):
    """None, or ``n_samples`` finite non-negative weights (not all zero) as ``dtype``,
    divided by the largest.

    A weighted mean ``Σ wᵢ Cᵢ / Σ w`` depends only on the weights' ratios, so they are checked
    in float64 and scaled to a largest weight of 1: weights of 1e38 (whose float32 sum would
    overflow to inf) and of 1e-200 (which float32 would round to 0) both work. With
    ``return_scale`` returns ``(weights, the largest weight)``: what scikit-learn's L2 term,
    divided by the weights' sum rather than a mean, needs to undo the scaling."""
    if w is None:
        return (None, 1.0) if return_scale else None
    arr = _numeric_array(name, w)
    if arr.ndim != 1 or arr.shape[0] != n_samples:
        raise ValueError(f"{name} must be 1-D with one weight per sample ({n_samples}), got "
                         f"shape {arr.shape}")
    arr = _finite_cast(name, arr, np.float64)
    if (arr < 0).any():
        where = _first_bad(arr < 0)
        raise ValueError(f"{name} must be non-negative, first {_index(name, where)} = "
                         f"{_value(arr, where)!r}")
    if not arr.any():
        raise ValueError(f"{name} is all zeros: no sample would count")
    scale = float(arr.max())
    scaled = np.ascontiguousarray(arr / scale, dtype=dtype)
    return (scaled, scale) if return_scale else scaled


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
            hint = (" (class labels go in a 1-D array)"
                    if arr.shape[1] == 1 and n_outputs > 1 else "")
            raise ValueError(f"{name} has {arr.shape[1]} columns; the network has "
                             f"{n_outputs} outputs{hint}")
        return _finite_cast(name, arr, dtype), False
    labels = labels_array(arr, n_outputs, name)
    out = np.zeros((n_samples, n_outputs), dtype=dtype)
    out[np.arange(n_samples), labels] = 1
    return out, True


def labels_array(arr, n_classes, name="y"):
    """Integer class labels in ``0 .. n_classes - 1`` (integral floats accepted).

    The range is checked before the cast to int64, so 1e30 or a huge uint64 is reported as
    itself rather than as whatever the cast wraps it to.
    """
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        for bad, what in ((~np.isfinite(arr), "NaN or infinite"), (arr != np.round(arr),
                                                                 "non-integer")):
            if bad.any():
                where = _first_bad(bad)
                raise ValueError(f"{name} must be integer class labels; it has {what} values, "
                                 f"first {_index(name, where)} = {_value(arr, where)!r}")
    if arr.size:
        low, high = arr.min().item(), arr.max().item()
        if low < 0 or high >= n_classes:
            where = _first_bad((arr < 0) | (arr >= n_classes))
            raise ValueError(f"{name} has labels from {low} to {high} (first out of range: "
                             f"{_index(name, where)} = {_value(arr, where)!r}); this network "
                             f"has {n_classes} outputs, so labels must be in "
                             f"0..{n_classes - 1}")
    return arr.astype(np.int64)


AUGMENT_KEYS = ("shift", "rotate", "scale")


def augmentation(augment, input_shape, X):
    """``fit(augment=...)`` as a ``layout.Augment``, or None when off (None, 0, or a dict of
    zeros). ``augment`` is the largest shift in pixels, or a dict with keys ``shift`` (int),
    ``rotate`` (degrees) and ``scale`` (a fraction), each optional; it needs an image
    ``input_shape`` ``(C, H, W)`` and dense ``X`` (checked)."""
    from ._layout import Augment

    if augment is None:
        return None
    if isinstance(augment, numbers.Integral) and not isinstance(augment, bool):
        augment = {"shift": augment}
    if not isinstance(augment, dict):
        shown = repr(augment)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ValueError(f"augment must be None, an int (the largest shift in pixels) or a "
                         f"dict with keys {', '.join(AUGMENT_KEYS)}; got {shown} "
                         f"({type(augment).__name__})")
    unknown = [k for k in augment if k not in AUGMENT_KEYS]
    if unknown:
        raise ValueError(f"augment has unknown key{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))}; the keys are "
                         f"{', '.join(AUGMENT_KEYS)}")
    limit = max(input_shape[1:]) if input_shape is not None else None
    shift = augment.get("shift", 0)
    if isinstance(shift, bool) or not isinstance(shift, numbers.Integral) or shift < 0 or (
            limit is not None and shift > limit):
        bound = f"0..{limit}" if limit is not None else ">= 0"
        raise ValueError(f"augment shift must be a whole number of pixels in {bound}, got "
                         f"{shift!r}")
    rotate = real("augment rotate (degrees)", augment.get("rotate", 0.0), low=0, high=180)
    scale = real("augment scale (a fraction)", augment.get("scale", 0.0), low=0, high=1,
                 high_open=True)
    if shift == 0 and rotate == 0 and scale == 0:
        return None
    if input_shape is None:
        raise ValueError(f"augment needs an image input: this network's input is "
                         f"{X.shape[1]} features; give it as a (channels, height, width) "
                         f"shape, e.g. Network([(1, 28, 28), 512, 256, 10])")
    if isinstance(X, CSR):
        raise ValueError("augment needs dense X: the images are moved as their rows are "
                         "gathered, and sparse rows are not (pass X.toarray())")
    C, H, W = input_shape
    return Augment(int(shift), rotate, scale, int(C), int(H), int(W))
