"""Layer specs (dense widths, Conv2D, MaxPool2D, AvgPool2D, BatchNorm, Dropout): their shape
arithmetic and the layer table.

A network is described by a list whose first entry is the input — an int (flat features) or
a ``(channels, height, width)`` shape — followed by layers: ints are dense widths,
``Conv2D(filters, kernel_size, stride=1, padding=0)``, ``MaxPool2D(size, stride=None)`` and
``AvgPool2D(size, stride=None)`` work on images; ``BatchNorm()`` normalises the layer just
before it (per channel after a Conv2D, per unit after a dense width), and ``Dropout(rate)``
zeroes a random fraction of its input while training. PyTorch's conventions hold:
convolution is cross-correlation with zero padding, output sizes are floored, and the flatten
before the first dense layer is implicit, in ``(C, H, W)`` order.

:func:`plan` turns such a list into :class:`Layer` records (input and output shapes, kind,
parameter shapes), checking that every geometry fits and naming the layer when it does not.
The compiled code sees the same records as one int64 table (:func:`table`,
:mod:`fastmlp._layout`).
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np

from . import _layout as layout

# Nothing past this many parameters / activations is worth trying: it would need more
# memory than any machine this library targets (and int64 offsets must not overflow).
MAX_ELEMENTS = 2**40


def _int(name, value, low, high=2**31 - 1):
    """``value`` as an int in ``low .. high``, else ValueError naming it. The default bound
    holds every layer integer (filters, kernel, stride, padding, pool size, input dimension):
    far past any real network, far below where int64 shape arithmetic (the kernels' layer
    table) could overflow. Dense widths and a flat input ("every layer size") are bounded by
    plan() instead, at MAX_ELEMENTS outputs or parameters, with the memory they would need
    (plan() words its own message for a width that fails here)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if value > high and name != "every layer size":
        raise ValueError(f"{name} must be at most {high:,}, got {value!r}")
    return int(value)


def _pair(name, value, low, high=2**31 - 1):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an integer or a pair of integers, got {value!r}")
        return (_int(name, value[0], low, high), _int(name, value[1], low, high))
    v = _int(name, value, low, high)
    return (v, v)


class Conv2D:
    """A 2-D convolution layer (cross-correlation with zero padding, as PyTorch's ``Conv2d``).

    ``weights[k]`` has shape ``(filters, in_channels, kh, kw)``, ``biases[k]`` ``(filters,)``.
    ``kernel_size`` is an int or a pair ``(kh, kw)``; ``stride`` and ``padding`` are ints.
    """

    def __init__(self, filters, kernel_size, stride=1, padding=0):
        self.filters = _int("Conv2D filters", filters, 1)
        self.kernel_size = _pair("Conv2D kernel_size", kernel_size, 1)
        self.stride = _int("Conv2D stride", stride, 1)
        self.padding = _int("Conv2D padding", padding, 0)

    def __repr__(self):
        kh, kw = self.kernel_size
        kernel = kh if kh == kw else (kh, kw)
        extra = "".join(f", {k}={v}" for k, v, default in
                        (("stride", self.stride, 1), ("padding", self.padding, 0))
                        if v != default)
        return f"Conv2D({self.filters}, {kernel}{extra})"

    def __eq__(self, other):
        return isinstance(other, Conv2D) and self.to_dict() == other.to_dict()

    def to_dict(self):
        return {"type": "conv2d", "filters": self.filters,
                "kernel_size": list(self.kernel_size), "stride": self.stride,
                "padding": self.padding}


class _Pool:
    """Pooling over ``size x size`` windows, ``stride`` apart (default: ``size``), no padding,
    output sizes floored."""

    name = type_name = ""

    def __init__(self, size, stride=None):
        self.size = _int(f"{self.name} size", size, 1)
        self.stride = self.size if stride is None else _int(f"{self.name} stride", stride, 1)

    def __repr__(self):
        extra = "" if self.stride == self.size else f", stride={self.stride}"
        return f"{self.name}({self.size}{extra})"

    def __eq__(self, other):
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    def to_dict(self):
        return {"type": self.type_name, "size": self.size, "stride": self.stride}


class MaxPool2D(_Pool):
    """Max-pooling over ``size x size`` windows, ``stride`` apart (default: ``size``).

    Backward routes each output's gradient to the input that won its window; ties go to the
    first maximum in row-major window order."""

    name, type_name = "MaxPool2D", "maxpool2d"


class AvgPool2D(_Pool):
    """Average pooling over ``size x size`` windows, ``stride`` apart (default: ``size``):
    PyTorch's ``AvgPool2d`` without padding. Backward shares each output's gradient equally
    among the ``size²`` inputs of its window."""

    name, type_name = "AvgPool2D", "avgpool2d"


class BatchNorm:
    """Batch normalisation of the layer just before it: per channel after a ``Conv2D``
    (PyTorch's ``BatchNorm2d``), per unit after a dense width (``BatchNorm1d``).

    It normalises that layer's *pre-activation* ``z`` and the layer's activation is applied
    after it (conv → BN → ReLU): ``y = γ (z - μ) / √(σ² + eps) + β``. Training normalises
    with the batch's mean and (biased) variance and moves the running statistics towards
    them by ``momentum`` (the running variance takes the unbiased batch variance, as
    PyTorch); prediction normalises with the running statistics. γ starts at 1, β at 0, the
    running mean at 0 and the running variance at 1 (``Network.batch_norms``)."""

    def __init__(self, eps=1e-5, momentum=0.1):
        self.eps = _real("BatchNorm eps", eps, 0, None)
        self.momentum = _real("BatchNorm momentum", momentum, 0, 1, high_closed=True)

    def __repr__(self):
        extra = ", ".join(f"{k}={v!r}" for k, v, default in
                          (("eps", self.eps, 1e-5), ("momentum", self.momentum, 0.1))
                          if v != default)
        return f"BatchNorm({extra})"

    def __eq__(self, other):
        return isinstance(other, BatchNorm) and self.to_dict() == other.to_dict()

    def to_dict(self):
        return {"type": "batchnorm", "eps": self.eps, "momentum": self.momentum}


class Dropout:
    """Inverted dropout while training: each input is zeroed with probability ``rate`` and
    the kept ones are scaled by ``1 / (1 - rate)``; prediction passes the input through."""

    def __init__(self, rate):
        self.rate = _real("Dropout rate", rate, 0, 1, low_closed=True)

    def __repr__(self):
        return f"Dropout({self.rate!r})"

    def __eq__(self, other):
        return isinstance(other, Dropout) and self.to_dict() == other.to_dict()

    def to_dict(self):
        return {"type": "dropout", "rate": self.rate}


def _real(name, value, low, high, low_closed=False, high_closed=False):
    """``value`` as a finite float between ``low`` and ``high`` (``None``: no upper bound),
    each end included when ``*_closed``, else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(
            value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    low_ok = value >= low if low_closed else value > low
    high_ok = high is None or (value <= high if high_closed else value < high)
    if not (low_ok and high_ok):
        interval = ("[" if low_closed else "(") + f"{low:g}, " + (
            "inf)" if high is None else f"{high:g}" + ("]" if high_closed else ")"))
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


# Layers that need an image (a spatial layout) as input, and every spec class.
IMAGE_LAYERS = (Conv2D, MaxPool2D, AvgPool2D)
SPECS = (Conv2D, MaxPool2D, AvgPool2D, BatchNorm, Dropout)
_KIND_OF = {Conv2D: "conv", MaxPool2D: "pool", AvgPool2D: "avgpool", BatchNorm: "batchnorm",
            Dropout: "dropout"}


@dataclass(frozen=True)
class Layer:
    """One layer's geometry: ``kind`` is ``"dense"``, ``"conv"``, ``"pool"`` (max),
    ``"avgpool"``, ``"batchnorm"`` or ``"dropout"``; shapes are ``(C, H, W)`` (a dense
    layer's are ``(n, 1, 1)``)."""

    kind: str
    in_shape: tuple
    out_shape: tuple
    spec: object  # the int or layer spec it came from

    @property
    def n_in(self):
        return math.prod(self.in_shape)

    @property
    def n_out(self):
        return math.prod(self.out_shape)

    @property
    def has_weights(self):
        """Dense and conv layers: a weight array and a bias vector, and an activation."""
        return self.kind in ("dense", "conv")

    @property
    def weight_shape(self):
        """The public weight shape: ``(n_out, n_in)`` dense, ``(F, C, kh, kw)`` conv."""
        if self.kind == "dense":
            return (self.n_out, self.n_in)
        if self.kind == "conv":
            return (self.out_shape[0], self.in_shape[0], *self.spec.kernel_size)
        return ()

    @property
    def n_params(self):
        """Numbers this layer keeps in the flat parameter vector: weights and biases; for
        batch normalisation γ, β and the running mean and variance (4 per channel)."""
        if self.kind == "batchnorm":
            return 4 * self.out_shape[0]
        if not self.has_weights:
            return 0
        return math.prod(self.weight_shape) + self.out_shape[0]  # (exact: no int64 wrap)

    @property
    def n_trainable(self):
        """The trainable ones among :attr:`n_params` (not the running statistics)."""
        return self.n_params // 2 if self.kind == "batchnorm" else self.n_params

    @property
    def fan_in(self):
        return self.n_in if self.kind == "dense" else math.prod(self.weight_shape[1:])


def _describe(index, spec):
    return f"layer {index} ({spec!r})"


def normalize_input(first):
    """The input entry as an int (flat) or a ``(C, H, W)`` tuple of ints."""
    if isinstance(first, (tuple, list)):
        if len(first) != 3:
            raise ValueError(f"the input shape must be (channels, height, width), got "
                             f"{first!r}")
        return tuple(_int("every input dimension", d, 1) for d in first)
    if isinstance(first, SPECS):
        raise ValueError(f"the first entry must be the input (an int or a (channels, height, "
                         f"width) shape), got {first!r}")
    try:
        return _int("every layer size", first, 1)
    except ValueError:
        raise ValueError(f"every layer size must be a positive integer, got {first!r}") from None


def _window_layer(index, spec, shape):
    """The Layer of a pooling spec over ``shape``, its window checked."""
    c, h, w = shape
    k, s = spec.size, spec.stride
    if k > h or k > w:
        raise ValueError(f"{_describe(index, spec)}: its {k}x{k} window does not fit its "
                         f"{h}x{w} input")
    return Layer(_KIND_OF[type(spec)], shape, (c, (h - k) // s + 1, (w - k) // s + 1), spec)


def plan(spec_list):
    """``[Layer, ...]`` for a list ``[input, layer, layer, ...]``, every geometry checked."""
    try:
        specs = list(spec_list)
    except TypeError:
        raise ValueError(f"layer_sizes must be a sequence of integers or layers, got "
                         f"{spec_list!r}") from None
    if len(specs) < 2:
        raise ValueError(f"layer_sizes needs at least an input and an output size, got "
                         f"{specs!r}")
    first = normalize_input(specs[0])
    shape = first if isinstance(first, tuple) else (first, 1, 1)
    image = isinstance(first, tuple)  # does the running shape still have a spatial layout?
    layers = []
    for index, spec in enumerate(specs[1:], start=1):
        if isinstance(spec, IMAGE_LAYERS) and not image:
            what = "convolutions" if isinstance(spec, Conv2D) else "pooling"
            raise ValueError(f"{_describe(index, spec)} needs an image input: start the list "
                             f"with a (channels, height, width) shape, and put {what} before "
                             "dense layers")
        if isinstance(spec, Conv2D):
            c, h, w = shape
            (kh, kw), s, p = spec.kernel_size, spec.stride, spec.padding
            if kh > h + 2 * p or kw > w + 2 * p:
                raise ValueError(f"{_describe(index, spec)}: its {kh}x{kw} kernel does not "
                                 f"fit its {h}x{w} input with padding {p}")
            out = (spec.filters, (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1)
            layers.append(Layer("conv", shape, out, spec))
        elif isinstance(spec, (MaxPool2D, AvgPool2D)):
            layers.append(_window_layer(index, spec, shape))
        elif isinstance(spec, BatchNorm):
            if not layers or not layers[-1].has_weights:
                raise ValueError(f"{_describe(index, spec)} must come right after a Conv2D or "
                                 "a dense width: it normalises that layer's pre-activation")
            layers.append(Layer("batchnorm", shape, shape, spec))
        elif isinstance(spec, Dropout):
            layers.append(Layer("dropout", shape, shape, spec))
        elif isinstance(spec, (tuple, list)):
            raise ValueError(f"layer {index} is a shape {spec!r}; only the first entry (the "
                             "input) can be a shape")
        else:
            try:
                width = _int("every layer size", spec, 1)
            except ValueError:
                raise ValueError(f"every layer size must be a positive integer, got {spec!r} "
                                 "(or a layer: Conv2D, MaxPool2D, AvgPool2D, BatchNorm, "
                                 "Dropout)") from None
            out = (width, 1, 1)
            layers.append(Layer("dense", shape, out, width))
            image = False
        shape = layers[-1].out_shape
        for what, count in (("outputs", layers[-1].n_out), ("parameters",
                                                           layers[-1].n_params)):
            if count > MAX_ELEMENTS:
                raise ValueError(f"{_describe(index, spec)} would have {count:,} {what} per "
                                 f"sample, about {count * 4 / 2**30:,.0f} GiB in float32: "
                                 "too large")
    if layers[-1].kind != "dense":
        raise ValueError(f"the last layer must be a dense width (the network's outputs), got "
                         f"{layers[-1].spec!r}")
    return layers


def row_activations(layers, activations):
    """Each layer's activation name, or None: ``activations`` has one name per layer with
    weights; a layer followed by a BatchNorm hands its activation to the BatchNorm, which
    normalises the layer's pre-activation (conv → BN → ReLU)."""
    names = iter(activations)
    rows = [next(names) if layer.has_weights else None for layer in layers]
    for k, layer in enumerate(layers):
        if layer.kind == "batchnorm":
            rows[k], rows[k - 1] = rows[k - 1], None
    return rows


def dropout_rates(layers, dropout):
    """Each layer's dropout rate while training: a Dropout layer's own, and ``dropout`` (fit's
    shorthand: one rate, or one per hidden layer with weights) on the output of every hidden
    layer with weights — after its BatchNorm, when it has one."""
    rates = [layer.spec.rate if layer.kind == "dropout" else 0.0 for layer in layers]
    hidden = [k + 1 if layers[k + 1].kind == "batchnorm" else k
              for k, layer in enumerate(layers[:-1]) if layer.has_weights]
    shorthand = dropout if isinstance(dropout, (list, tuple)) else [dropout] * len(hidden)
    for k, rate in zip(hidden, shorthand):
        if rate:
            rates[k] = float(rate)
    return rates


def is_plain_mlp(spec_list):
    """True for ``[int, int, ...]``: the original MLP form, saved as plain layer sizes."""
    return all(not isinstance(s, (*SPECS, tuple, list)) for s in spec_list)


_KIND_CODES = {"dense": layout.DENSE, "conv": layout.CONV, "pool": layout.POOL,
               "avgpool": layout.AVGPOOL, "batchnorm": layout.BATCHNORM,
               "dropout": layout.DROPOUT}


def table(layers, activations):
    """The int64 layer table the kernels walk, and the flat parameter vector's size.

    ``activations`` has one activation name per layer with weights (see
    :func:`row_activations`)."""
    rows = np.zeros((len(layers), layout.COLUMNS), dtype=np.int64)
    offset = 0
    for row, layer, act in zip(rows, layers, row_activations(layers, activations)):
        row[layout.KIND] = _KIND_CODES[layer.kind]
        row[layout.IN_C:layout.IN_W + 1] = layer.in_shape
        row[layout.OUT_C:layout.OUT_W + 1] = layer.out_shape
        row[layout.KH] = row[layout.KW] = row[layout.STRIDE] = 1
        if layer.kind == "dense":
            row[layout.IN_C:layout.IN_W + 1] = (layer.n_in, 1, 1)
        elif layer.kind == "conv":
            row[layout.KH], row[layout.KW] = layer.spec.kernel_size
            row[layout.STRIDE], row[layout.PAD] = layer.spec.stride, layer.spec.padding
        elif layer.kind in ("pool", "avgpool"):
            row[layout.KH] = row[layout.KW] = layer.spec.size
            row[layout.STRIDE] = layer.spec.stride
        elif layer.kind == "batchnorm":
            # floats, kept as their bits (the kernels read them back as float64)
            row[layout.BN_EPS:layout.BN_MOMENTUM + 1] = np.array(
                [layer.spec.eps, layer.spec.momentum]).view(np.int64)
        row[layout.PARAM] = offset
        row[layout.ACT] = -1 if act is None else layout.ACTIVATION_CODES[act]
        offset += layer.n_params
    return rows, offset


def to_json(spec_list):
    """A JSON-able form of ``[input, layer, ...]`` (for model files)."""
    out = []
    for spec in spec_list:
        if isinstance(spec, SPECS):
            out.append(spec.to_dict())
        elif isinstance(spec, (tuple, list)):
            out.append([int(d) for d in spec])
        else:
            out.append(int(spec))
    return out


def from_json(items):
    """Inverse of :func:`to_json`; raises ValueError on anything it did not write."""
    if not isinstance(items, list):
        raise ValueError(f"layers must be a list, got {type(items).__name__}")
    specs = []
    for item in items:
        if isinstance(item, dict):
            kind = item.get("type")
            try:
                if kind == "conv2d":
                    specs.append(Conv2D(item["filters"], item["kernel_size"], item["stride"],
                                        item["padding"]))
                elif kind == "maxpool2d":
                    specs.append(MaxPool2D(item["size"], item["stride"]))
                elif kind == "avgpool2d":
                    specs.append(AvgPool2D(item["size"], item["stride"]))
                elif kind == "batchnorm":
                    specs.append(BatchNorm(item["eps"], item["momentum"]))
                elif kind == "dropout":
                    specs.append(Dropout(item["rate"]))
                else:
                    raise ValueError(f"unknown layer type {kind!r}")
            except KeyError as exc:
                raise ValueError(f"layer {item!r} lacks {exc}") from None
        elif isinstance(item, list):
            specs.append(tuple(item))
        elif isinstance(item, int) and not isinstance(item, bool):
            specs.append(item)
        else:
            raise ValueError(f"not a layer: {item!r}")
    plan(specs)  # every geometry checked here too
    return specs


def parse(text):
    """Layers from the CLI's ``--layers`` syntax, e.g.
    ``"conv32k3p1,bn,pool2,conv64k3p1,bn,avg2,drop0.25,128"``.

    ``convF k K [s S] [p P]`` (no spaces): F filters, K x K kernel, stride S (default 1),
    padding P (default 0); ``poolK [sS]``: K x K max-pooling, stride S (default K);
    ``avgK [sS]``: average pooling, likewise; ``bn``: batch normalisation of the layer before;
    ``dropP``: dropout with rate P (a decimal in [0, 1), e.g. ``drop0.25``); an int: a dense
    width. Numbers are ASCII digits ``[0-9]``, at most 20 of them (``--hidden`` widths follow
    the same grammar). ValueError naming the first bad token."""
    import re

    if not isinstance(text, str):
        raise ValueError(f"layers must be a string like 'conv16k5p2,pool2,128', got "
                         f"{type(text).__name__}")
    number = "([0-9]+)"  # not \d, which also matches Arabic-Indic and other digits
    forms = {  # token form -> the spec it makes from its numbers (None: not given)
        f"conv{number}k{number}(?:s{number})?(?:p{number})?":
            lambda f, k, s, p: Conv2D(f, k, 1 if s is None else s, 0 if p is None else p),
        f"pool{number}(?:s{number})?": lambda k, s: MaxPool2D(k, s),
        f"avg{number}(?:s{number})?": lambda k, s: AvgPool2D(k, s),
        "bn": lambda: BatchNorm(),
        "drop([0-9]*\\.?[0-9]+)": lambda rate: Dropout(rate),
        number: lambda width: width,
    }
    specs = []
    for token in [t.strip() for t in text.split(",")]:
        shown = repr(token) if len(token) <= 40 else repr(token[:24] + "...") + \
            f" ({len(token):,} characters)"
        for form, make in forms.items():
            match = re.fullmatch(form, token)
            if match:
                break
        else:
            raise ValueError(f"bad layer {shown}: use convFkK[sS][pP] (e.g. conv16k5p2), "
                             "poolK[sS] or avgK[sS] (e.g. pool2), bn, dropP (e.g. drop0.25) "
                             "or a dense width (e.g. 128), with digits 0-9")
        if any(g is not None and len(g) > 20 for g in match.groups()):
            raise ValueError(f"bad layer {shown}: a number of more than 20 digits")
        n = [None if g is None else (float(g) if "drop" in form else int(g))
             for g in match.groups()]
        try:
            specs.append(make(*n))
        except ValueError as exc:
            raise ValueError(f"bad layer {shown}: {exc}") from None
    return specs
