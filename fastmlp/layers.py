"""Layer specs (Dense widths, Conv2D, MaxPool2D): their shape arithmetic and the layer table.

A network is described by a list whose first entry is the input — an int (flat features) or
a ``(channels, height, width)`` shape — followed by layers: ints are dense widths,
``Conv2D(filters, kernel_size, stride=1, padding=0)`` and ``MaxPool2D(size, stride=None)``
work on images. PyTorch's conventions hold: convolution is cross-correlation with zero
padding, output sizes are floored, and the flatten before the first dense layer is implicit,
in ``(C, H, W)`` order.

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


class MaxPool2D:
    """Max-pooling over ``size x size`` windows, ``stride`` apart (default: ``size``).

    Backward routes each output's gradient to the input that won its window; ties go to the
    first maximum in row-major window order."""

    def __init__(self, size, stride=None):
        self.size = _int("MaxPool2D size", size, 1)
        self.stride = self.size if stride is None else _int("MaxPool2D stride", stride, 1)

    def __repr__(self):
        extra = "" if self.stride == self.size else f", stride={self.stride}"
        return f"MaxPool2D({self.size}{extra})"

    def __eq__(self, other):
        return isinstance(other, MaxPool2D) and self.to_dict() == other.to_dict()

    def to_dict(self):
        return {"type": "maxpool2d", "size": self.size, "stride": self.stride}


@dataclass(frozen=True)
class Layer:
    """One layer's geometry: ``kind`` is ``"dense"``, ``"conv"`` or ``"pool"``; shapes are
    ``(C, H, W)`` (a dense layer's are ``(n, 1, 1)``)."""

    kind: str
    in_shape: tuple
    out_shape: tuple
    spec: object  # the int, Conv2D or MaxPool2D it came from

    @property
    def n_in(self):
        return math.prod(self.in_shape)

    @property
    def n_out(self):
        return math.prod(self.out_shape)

    @property
    def has_params(self):
        return self.kind != "pool"

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
        if not self.has_params:
            return 0
        return math.prod(self.weight_shape) + self.out_shape[0]  # (exact: no int64 wrap)

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
    if isinstance(first, (Conv2D, MaxPool2D)):
        raise ValueError(f"the first entry must be the input (an int or a (channels, height, "
                         f"width) shape), got {first!r}")
    try:
        return _int("every layer size", first, 1)
    except ValueError:
        raise ValueError(f"every layer size must be a positive integer, got {first!r}") from None


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
        if isinstance(spec, (Conv2D, MaxPool2D)) and not image:
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
        elif isinstance(spec, MaxPool2D):
            c, h, w = shape
            k, s = spec.size, spec.stride
            if k > h or k > w:
                raise ValueError(f"{_describe(index, spec)}: its {k}x{k} window does not fit "
                                 f"its {h}x{w} input")
            out = (c, (h - k) // s + 1, (w - k) // s + 1)
            layers.append(Layer("pool", shape, out, spec))
        elif isinstance(spec, (tuple, list)):
            raise ValueError(f"layer {index} is a shape {spec!r}; only the first entry (the "
                             "input) can be a shape")
        else:
            try:
                width = _int("every layer size", spec, 1)
            except ValueError:
                raise ValueError(f"every layer size must be a positive integer, got {spec!r} "
                                 "(or a layer: Conv2D, MaxPool2D)") from None
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


def is_plain_mlp(spec_list):
    """True for ``[int, int, ...]``: the original MLP form, saved as plain layer sizes."""
    return all(not isinstance(s, (Conv2D, MaxPool2D, tuple, list)) for s in spec_list)


def table(layers, act_codes):
    """The int64 layer table the kernels walk, and the flat parameter vector's size.

    ``act_codes`` has one activation code per layer with parameters."""
    rows = np.zeros((len(layers), layout.COLUMNS), dtype=np.int64)
    codes = iter(act_codes)
    offset = 0
    for row, layer in zip(rows, layers):
        row[layout.KIND] = {"dense": layout.DENSE, "conv": layout.CONV,
                            "pool": layout.POOL}[layer.kind]
        row[layout.IN_C:layout.IN_W + 1] = layer.in_shape
        row[layout.OUT_C:layout.OUT_W + 1] = layer.out_shape
        if layer.kind == "dense":
            row[layout.IN_C:layout.IN_W + 1] = (layer.n_in, 1, 1)
            row[layout.KH] = row[layout.KW] = row[layout.STRIDE] = 1
        elif layer.kind == "conv":
            row[layout.KH], row[layout.KW] = layer.spec.kernel_size
            row[layout.STRIDE], row[layout.PAD] = layer.spec.stride, layer.spec.padding
        else:
            row[layout.KH] = row[layout.KW] = layer.spec.size
            row[layout.STRIDE] = layer.spec.stride
        row[layout.PARAM] = offset
        row[layout.ACT] = next(codes) if layer.has_params else -1
        offset += layer.n_params
    return rows, offset


def to_json(spec_list):
    """A JSON-able form of ``[input, layer, ...]`` (for model files)."""
    out = []
    for spec in spec_list:
        if isinstance(spec, (Conv2D, MaxPool2D)):
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
    """Layers from the CLI's ``--layers`` syntax, e.g. ``"conv16k5p2,pool2,conv32k5p2,pool2,128"``.

    ``convF k K [s S] [p P]`` (no spaces): F filters, K x K kernel, stride S (default 1),
    padding P (default 0); ``poolK [sS]``: K x K max-pooling, stride S (default K); an int: a
    dense width. Numbers are ASCII digits ``[0-9]``, at most 20 of them (``--hidden`` widths
    follow the same grammar). ValueError naming the first bad token."""
    import re

    if not isinstance(text, str):
        raise ValueError(f"layers must be a string like 'conv16k5p2,pool2,128', got "
                         f"{type(text).__name__}")
    number = "([0-9]+)"  # not \d, which also matches Arabic-Indic and other digits
    specs = []
    for token in [t.strip() for t in text.split(",")]:
        shown = repr(token) if len(token) <= 40 else repr(token[:24] + "...") + \
            f" ({len(token):,} characters)"
        conv = re.fullmatch(f"conv{number}k{number}(?:s{number})?(?:p{number})?", token)
        pool = re.fullmatch(f"pool{number}(?:s{number})?", token)
        dense = re.fullmatch(number, token)
        match = conv or pool or dense
        if match is None:
            raise ValueError(f"bad layer {shown}: use convFkK[sS][pP] (e.g. conv16k5p2), "
                             "poolK[sS] (e.g. pool2) or a dense width (e.g. 128), with "
                             "digits 0-9")
        if any(g is not None and len(g) > 20 for g in match.groups()):
            raise ValueError(f"bad layer {shown}: a number of more than 20 digits")
        n = [None if g is None else int(g) for g in match.groups()]
        try:
            if conv:
                f, k, s, p = n
                specs.append(Conv2D(f, k, 1 if s is None else s, 0 if p is None else p))
            elif pool:
                specs.append(MaxPool2D(*n))
            else:
                specs.append(n[0])
        except ValueError as exc:
            raise ValueError(f"bad layer {shown}: {exc}") from None
    return specs
