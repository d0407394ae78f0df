"""Export a trained :class:`~fastmlp.network.Network`: an ONNX file, or a static web site.

:func:`to_onnx` writes the network as an ONNX graph (``onnx.helper``; opset
:data:`ONNX_OPSET`) whose output equals ``Network.predict_proba``: dense layers are ``Gemm``
(``W`` kept in fastmlp's ``(n_out, n_in)`` layout, ``transB=1``), convolutions ``Conv``
(PyTorch's and ONNX's semantics are the same: cross-correlation, zero padding, stride),
pooling ``MaxPool`` and ``AveragePool`` (no padding, floored output sizes, as fastmlp), batch
normalisation ``BatchNormalization`` in inference mode (the running statistics and ``eps``;
on ``(N, C, H, W)`` after a convolution, ``(N, C)`` after a dense layer; the activation of
the layer it normalises follows it), the implicit flatten ``Flatten`` (``(C, H, W)`` order)
and the activations ``Relu``, ``Sigmoid``, ``Tanh``, ``Softmax`` (``axis=1``), ``Identity``
and ``Exp``. ``Dropout`` layers are the identity at inference and make no node. The batch
dimension is dynamic (``N``). It needs the ``onnx`` package (``pip install
'fastmlp[onnx]'``), imported only when called.

:func:`to_web` writes a folder that any static file server can serve: the draw-a-digit page
(``index.html``, ``app.js``, ``style.css``, copied from ``fastmlp/web/export/``), the
parameters as one little-endian binary file (``model.bin``) and a small JSON manifest
(``model.json``) that says where each layer's parameters are. The page preprocesses a drawing
like :func:`fastmlp.images.to_mnist` and runs the forward pass itself, in plain JavaScript:
nothing is fetched from any other host, and nothing is sent anywhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import layers as layer_specs

ONNX_OPSET = 17  #: the ONNX operator set the graph uses (onnxruntime >= 1.12 runs it)
ONNX_IR_VERSION = 8  #: the IR version that goes with opset 17
ONNX_MAX_BYTES = 2**31 - 2**20  #: protobuf's 2 GiB limit, less room for the graph itself
WEB_FORMAT = "fastmlp.web-model"
#: model.json's version: 1 describes dense, conv and max-pool layers (what every fastmlp
#: before AvgPool2D, BatchNorm and Dropout wrote); 2 adds those kinds. A manifest carries
#: the lowest version that describes its network, so a network of the old kinds exports as
#: it always did, and a page that knows version 1 alone refuses a version 2 model (saying
#: so) rather than misreading it.
WEB_VERSION = 2
_WEB_V1_KINDS = ("dense", "conv", "pool")
WEB_PAGE_FILES = ("index.html", "app.js", "style.css")  #: copied from fastmlp/web/export/
WEB_MANIFEST = "model.json"
WEB_WEIGHTS = "model.bin"
WEB_INPUT = (1, 28, 28)  #: what the page feeds the network: one 28x28 image, ink = 1

_ONNX_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh",
                     "softmax": "Softmax", "identity": "Identity", "exp": "Exp"}


def require_onnx():
    """The ``onnx`` module, or an ImportError that says how to install it (one line)."""
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'fastmlp[onnx]'"
                          ) from None
    return onnx


def _plan(net):
    """``[(Layer, activation or None, {name: array}), ...]`` for a Network: each layer, the
    activation applied to its output (:func:`fastmlp.layers.row_activations`: a layer that a
    BatchNorm follows hands its activation to the BatchNorm) and its parameters, ``W`` and
    ``b`` (dense, conv: the public layouts) or ``gamma``, ``beta``, ``running_mean`` and
    ``running_var`` (BatchNorm); ``{}`` for the others."""
    try:
        layers = layer_specs.plan(net.layers)
        weighted = iter(list(zip(net.weights, net.biases)))
        norms = iter(list(net.batch_norms))
        activations = layer_specs.row_activations(layers, list(net.activations))
    except AttributeError:
        raise TypeError(f"expected a fastmlp Network, got {type(net).__name__}") from None
    out = []
    for layer, act in zip(layers, activations):
        if layer.has_weights:
            W, b = next(weighted)
            params = {"W": W, "b": b}
        elif layer.kind == "batchnorm":
            bn = next(norms)
            params = {name: getattr(bn, name) for name in _BN_FIELDS}
        else:
            params = {}
        out.append((layer, act, params))
    return out


_BN_FIELDS = ("gamma", "beta", "running_mean", "running_var")


def _architecture(net):
    if layer_specs.is_plain_mlp(net.layers):
        return "-".join(str(n) for n in net.layer_sizes)
    return repr(list(net.layers))


def _input_doc(net, dtype):
    shape = net.input_shape
    if shape is None:
        n = net.layer_sizes[0]
        text = f"input 'input': (N, {n}) {dtype.name}, one row per sample, as given to " \
               "Network.predict_proba"
        if n == 784:
            text += " (MNIST: a 28x28 image row by row, pixels in [0, 1], ink = 1)"
        return text
    c, h, w = shape
    text = f"input 'input': (N, C, H, W) = (N, {c}, {h}, {w}) {dtype.name}, images as given " \
           "to Network.predict_proba reshaped to (N, C, H, W)"
    if shape == WEB_INPUT:
        text += " (MNIST: pixels in [0, 1], ink = 1)"
    return text


def onnx_model(net, dtype=None):
    """The network as an ``onnx.ModelProto`` (checked with ``onnx.checker``).

    ``dtype`` is ``"float32"`` or ``"float64"`` (default: the network's own). onnxruntime's
    CPU provider has no float64 ``Conv`` or ``AveragePool``: run a float64 CNN there with
    ``dtype="float32"``."""
    onnx = require_onnx()
    from onnx import TensorProto, helper, numpy_helper

    from . import __version__

    dtype = np.dtype(net.dtype if dtype is None else dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype.name}")
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    plan = _plan(net)
    n_bytes = sum(a.size for _, _, params in plan for a in params.values()) * dtype.itemsize
    if n_bytes > ONNX_MAX_BYTES:
        raise ValueError(f"the network's parameters take {n_bytes / 2**30:.1f} GiB in "
                         f"{dtype.name}: more than fits in one ONNX file (2 GiB)")

    image = net.input_shape is not None
    in_shape = ["N", *net.input_shape] if image else ["N", net.layer_sizes[0]]
    nodes, inits = [], []

    def constant(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype), name))
        return name

    current = "input"
    last = len(plan) - 1
    k = j = 0  # the layer's index among those with weights (weights[k]) / BatchNorms
    for i, (layer, act, params) in enumerate(plan, start=1):
        s = layer.spec
        if layer.kind == "dropout":
            continue  # the identity at inference
        if layer.kind in ("pool", "avgpool"):
            op = "MaxPool" if layer.kind == "pool" else "AveragePool"
            nodes.append(helper.make_node(op, [current], [f"pool{i}"], name=f"pool{i}",
                                          kernel_shape=[s.size, s.size],
                                          strides=[s.stride, s.stride]))
            current = f"pool{i}"
            continue
        if layer.kind == "batchnorm":
            eps32 = float(np.float32(s.eps))
            if dtype == np.float64 and eps32 != s.eps:
                # ONNX's epsilon is a float32 attribute: a float64 graph's variance carries
                # the rest of eps, so that variance + epsilon is fastmlp's running_var + eps
                params = {**params, "running_var": params["running_var"] + (s.eps - eps32)}
            names = [constant(f"bn{j}_{field}", params[field]) for field in _BN_FIELDS]
            # in inference mode (training_mode 0) momentum is unused; ONNX's is the weight
            # of the running value, PyTorch's and fastmlp's that of the batch's
            nodes.append(helper.make_node("BatchNormalization", [current, *names], [f"z{i}"],
                                          name=f"batchnorm{i}", epsilon=s.eps,
                                          momentum=1.0 - s.momentum))
            j += 1
        elif layer.kind == "conv":
            p = s.padding
            nodes.append(helper.make_node("Conv", [current, constant(f"W{k}", params["W"]),
                                                   constant(f"b{k}", params["b"])],
                                          [f"z{i}"], name=f"conv{i}",
                                          kernel_shape=list(s.kernel_size),
                                          strides=[s.stride, s.stride], pads=[p, p, p, p]))
            k += 1
        else:
            if image:  # the implicit flatten, in (C, H, W) order
                nodes.append(helper.make_node("Flatten", [current], ["flat"], name="flatten",
                                              axis=1))
                current, image = "flat", False
            nodes.append(helper.make_node("Gemm", [current, constant(f"W{k}", params["W"]),
                                                   constant(f"b{k}", params["b"])],
                                          [f"z{i}"], name=f"dense{i}", transB=1))
            k += 1
        current = f"z{i}"
        if act is not None:  # (None: a BatchNorm follows and applies it)
            out = "probabilities" if i - 1 == last else f"a{i}"
            extra = {"axis": 1} if act == "softmax" else {}
            nodes.append(helper.make_node(_ONNX_ACTIVATIONS[act], [current], [out],
                                          name=f"{act}{i}", **extra))
            current = out

    doc = (f"fastmlp {__version__} Network {_architecture(net)}, activations "
           f"{', '.join(net.activations)}. {_input_doc(net, dtype)}. Output 'probabilities': "
           f"(N, {net.layer_sizes[-1]}) {dtype.name}, equal to Network.predict_proba.")
    graph = helper.make_graph(
        nodes, "fastmlp", [helper.make_tensor_value_info("input", elem, in_shape)],
        [helper.make_tensor_value_info("probabilities", elem, ["N", net.layer_sizes[-1]])],
        inits, doc_string=doc)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              ir_version=ONNX_IR_VERSION, producer_name="fastmlp",
                              producer_version=__version__, doc_string=doc)
    helper.set_model_props(model, {
        "fastmlp.layers": json.dumps(layer_specs.to_json(net.layers)),
        "fastmlp.activations": json.dumps(list(net.activations)),
        "fastmlp.cost": str(net.cost)})
    onnx.checker.check_model(model)
    return model


def to_onnx(net, path, dtype=None):
    """Write ``net`` as an ONNX file at ``path`` (atomically); returns the path.

    The graph's input ``input`` is ``(N, features)`` for a dense network and
    ``(N, C, H, W)`` for one with an image input; its output ``probabilities`` is
    ``(N, n_outputs)`` and equals ``net.predict_proba``. See :func:`onnx_model` for ``dtype``.
    Needs ``pip install 'fastmlp[onnx]'``."""
    from .io import atomic_write

    model = onnx_model(net, dtype)
    data = model.SerializeToString()
    path = Path(os.fspath(path))
    atomic_write(path, lambda f: f.write(data))
    return path


# ------------------------------------------------------------------------------ web


def web_manifest(net):
    """``(manifest, weights)``: the JSON-able description the page reads and the bytes of
    ``model.bin`` (every layer's parameters in layer order, little-endian, in the network's
    dtype; offsets and lengths in the manifest count values, not bytes).

    Each entry of ``manifest["layers"]`` has ``type`` (``dense``, ``conv``, ``pool`` — max —,
    ``avgpool``, ``batchnorm`` or ``dropout``), ``in_shape`` and ``out_shape``; conv adds
    ``kernel_size``, ``stride``, ``padding``; the pools ``size``, ``stride``; dropout its
    ``rate`` (unused: the identity at inference). Dense, conv and batchnorm have
    ``activation``, the function applied to their output (``null`` for a layer that a
    BatchNorm follows: the BatchNorm applies it) and blocks ``{offset, length, shape}``:
    ``weights`` and ``bias`` (public layouts), or a BatchNorm's ``gamma``, ``beta``,
    ``running_mean``, ``running_var`` and its ``eps``: it computes ``γ (z - mean) /
    √(var + eps) + β`` per channel."""
    from . import __version__

    plan = _plan(net)
    shape = net.input_shape or (net.layer_sizes[0],)
    if tuple(shape) not in (WEB_INPUT, (784,)):
        raise ValueError(f"the exported page feeds one 28x28 image, (784,) or (1, 28, 28), "
                         f"but this network takes {tuple(shape)}")
    dtype = np.dtype(net.dtype)
    little = dtype.newbyteorder("<")
    blocks, entries, offset = [], [], 0
    for layer, act, params in plan:
        entry = {"type": layer.kind, "in_shape": list(layer.in_shape),
                 "out_shape": list(layer.out_shape)}
        spec = layer.spec
        if layer.kind in ("pool", "avgpool"):
            entry.update(size=spec.size, stride=spec.stride)
        elif layer.kind == "dropout":
            entry["rate"] = spec.rate
        elif layer.kind == "batchnorm":
            entry["eps"] = spec.eps
        elif layer.kind == "conv":
            entry.update(kernel_size=list(spec.kernel_size), stride=spec.stride,
                         padding=spec.padding)
        if layer.has_weights or layer.kind == "batchnorm":
            entry["activation"] = act  # null: the BatchNorm that follows applies it
        names = {"W": "weights", "b": "bias"}
        for name, array in params.items():
            block = np.ascontiguousarray(array, little).reshape(-1)
            entry[names.get(name, name)] = {"offset": offset, "length": int(block.size),
                                            "shape": list(array.shape)}
            blocks.append(block)
            offset += block.size
        entries.append(entry)
    data = b"".join(block.tobytes() for block in blocks)
    manifest = {
        "format": WEB_FORMAT,
        "version": 1 if all(e["type"] in _WEB_V1_KINDS for e in entries) else WEB_VERSION,
        "fastmlp": __version__,
        "architecture": _architecture(net),
        "input_shape": list(WEB_INPUT),
        "n_outputs": int(net.layer_sizes[-1]),
        "dtype": dtype.name,
        "weights_file": WEB_WEIGHTS,
        "weights_bytes": len(data),
        "n_params": int(offset),
        "layers": entries,
    }
    return manifest, data


def to_web(net, folder):
    """Write the static draw-a-digit site for ``net`` into ``folder`` (created if needed;
    other files in it are left alone). Returns ``{file name: bytes written}``.

    Serve the folder with any static file server (``python -m http.server -d FOLDER``):
    browsers do not let a page opened from ``file://`` read its own ``model.bin``."""
    from .io import atomic_write

    manifest, data = web_manifest(net)
    folder = Path(os.fspath(folder))
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"cannot export the web page to {folder}: it is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    source = Path(__file__).resolve().parent / "web" / "export"
    files = {name: (source / name).read_bytes() for name in WEB_PAGE_FILES}
    files[WEB_MANIFEST] = (json.dumps(manifest, indent=1) + "\n").encode("utf-8")
    files[WEB_WEIGHTS] = data
    for name, content in files.items():
        atomic_write(folder / name, lambda f, content=content: f.write(content))
    return {name: len(content) for name, content in files.items()}
