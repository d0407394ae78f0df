"""``fastmlp.export``: ONNX files that onnxruntime runs to ``Network.predict_proba``'s numbers,
the web export's files, and ``fastmlp export`` on the command line (bad input: one line,
status 2).

Needs onnx and onnxruntime (``pip install '.[test]'`` or ``'.[onnx]'``): without them these
tests fail saying so (CI must not pass by skipping). The browser half of the web export is
tests/test_export_web.py.
"""

import json
import re
import sys

import numpy as np
import pytest

from fastmlp import AvgPool2D, BatchNorm, Conv2D, Dropout, MaxPool2D, export
from fastmlp.network import Network

from test_cli import assert_one_line_error, run

TOLERANCE = 1e-5  # onnxruntime vs predict_proba, float32

# conv -> BN -> ReLU blocks, both poolings, dropout after a pool, after a BN'd dense layer
BN_CNN = [(1, 28, 28), Conv2D(8, 5, padding=2), BatchNorm(), MaxPool2D(2), Dropout(0.25),
          Conv2D(16, 3, padding=1), BatchNorm(), AvgPool2D(2), 32, BatchNorm(), Dropout(0.5),
          10]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def ort():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as exc:
        pytest.fail(f"{exc.name} is not installed: pip install '.[onnx]' (the test extra has it)")
    return onnxruntime


@pytest.fixture(scope="module")
def mnist_data(data_dir):
    from fastmlp.datasets import load_mnist

    return load_mnist(data_dir, download=False, progress=False)


def session(ort, path_or_bytes):
    what = str(path_or_bytes) if not isinstance(path_or_bytes, bytes) else path_or_bytes
    return ort.InferenceSession(what, providers=["CPUExecutionProvider"])


def run_onnx(sess, net, X):
    """onnxruntime's output for rows X (reshaped to (N, C, H, W) for an image input)."""
    if net.input_shape is not None:
        X = X.reshape(-1, *net.input_shape)
    return sess.run(["probabilities"], {"input": X})[0]


def check_on_mnist(ort, net, mnist_data, tmp_path):
    import onnx

    path = export.to_onnx(net, tmp_path / "net.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    graph_in = model.graph.input[0].type.tensor_type
    assert graph_in.shape.dim[0].dim_param == "N"  # dynamic batch
    assert graph_in.elem_type == onnx.TensorProto.FLOAT
    X_test = mnist_data[2]
    sess = session(ort, path)
    got = run_onnx(sess, net, X_test)  # all 10,000 test images in one batch
    want = net.predict_proba(X_test)
    assert got.shape == want.shape == (10000, 10) and got.dtype == np.float32
    diff = float(np.abs(got - want).max())
    print(f"\nONNX vs predict_proba, {net.layers}: max |diff| {diff:.3g} on 10,000 images; "
          f"{path.stat().st_size:,} bytes")
    assert diff <= TOLERANCE
    assert (got.argmax(1) == want.argmax(1)).mean() > 0.999
    for n in (1, 7):  # other batch sizes through the same file
        np.testing.assert_allclose(run_onnx(sess, net, X_test[:n]), want[:n], atol=TOLERANCE)
    return model


def test_onnx_mlp_matches_predict_proba_on_mnist(ort, mnist_data, tmp_path):
    X, y = mnist_data[0][:5000], mnist_data[1][:5000]
    net = Network([784, 64, 10], seed=0)
    net.fit(X, y, epochs=3, batch_size=32, learning_rate=0.1, verbose=False)
    model = check_on_mnist(ort, net, mnist_data, tmp_path)
    assert "(N, 784) float32" in model.graph.doc_string
    assert "pixels in [0, 1]" in model.graph.doc_string
    assert [n.op_type for n in model.graph.node] == ["Gemm", "Relu", "Gemm", "Softmax"]
    assert model.producer_name == "fastmlp"


def test_onnx_cnn_matches_predict_proba_on_mnist(ort, mnist_data, tmp_path):
    # conv, pool, a conv with stride and padding, a pool whose output size is floored (7 -> 3),
    # then the implicit flatten and two dense layers
    X, y = mnist_data[0][:5000], mnist_data[1][:5000]
    net = Network([(1, 28, 28), Conv2D(8, 5, padding=2), MaxPool2D(2),
                   Conv2D(16, 3, stride=2, padding=1), MaxPool2D(2), 32, 10], seed=0)
    net.fit(X, y, epochs=2, batch_size=32, learning_rate=0.05, verbose=False)
    model = check_on_mnist(ort, net, mnist_data, tmp_path)
    assert "(N, C, H, W) = (N, 1, 28, 28) float32" in model.graph.doc_string
    assert [n.op_type for n in model.graph.node] == [
        "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu",
        "Gemm", "Softmax"]
    assert json.loads({p.key: p.value for p in model.metadata_props}["fastmlp.layers"]) == [
        [1, 28, 28], {"type": "conv2d", "filters": 8, "kernel_size": [5, 5], "stride": 1,
                      "padding": 2}, {"type": "maxpool2d", "size": 2, "stride": 2},
        {"type": "conv2d", "filters": 16, "kernel_size": [3, 3], "stride": 2, "padding": 1},
        {"type": "maxpool2d", "size": 2, "stride": 2}, 32, 10]


def test_onnx_cnn_with_batchnorm_avgpool_dropout_matches_predict_proba_on_mnist(
        ort, mnist_data, tmp_path):
    # trained: the running statistics are the ones fit kept, not the initial 0 and 1
    X, y = mnist_data[0][:5000], mnist_data[1][:5000]
    net = Network(BN_CNN, seed=0)
    net.fit(X, y, epochs=2, batch_size=32, learning_rate=0.05, verbose=False)
    assert all(np.abs(bn.running_mean).max() > 1e-3 for bn in net.batch_norms)
    model = check_on_mnist(ort, net, mnist_data, tmp_path)
    assert [n.op_type for n in model.graph.node] == [
        "Conv", "BatchNormalization", "Relu", "MaxPool", "Conv", "BatchNormalization", "Relu",
        "AveragePool", "Flatten", "Gemm", "BatchNormalization", "Relu", "Gemm", "Softmax"]
    inits = {i.name: i for i in model.graph.initializer}
    import onnx.numpy_helper

    for j, bn in enumerate(net.batch_norms):
        for field in ("gamma", "beta", "running_mean", "running_var"):
            np.testing.assert_array_equal(onnx.numpy_helper.to_array(inits[f"bn{j}_{field}"]),
                                          getattr(bn, field))
    norm = [n for n in model.graph.node if n.op_type == "BatchNormalization"][0]
    attrs = {a.name: a for a in norm.attribute}
    assert attrs["epsilon"].f == pytest.approx(1e-5) and "training_mode" not in attrs
    assert json.loads({p.key: p.value for p in model.metadata_props}["fastmlp.layers"])[2:5] \
        == [{"type": "batchnorm", "eps": 1e-5, "momentum": 0.1},
            {"type": "maxpool2d", "size": 2, "stride": 2}, {"type": "dropout", "rate": 0.25}]


def random_net(spec, activations, dtype, seed, backend="numba"):
    """A network with random parameters large enough for every activation to matter."""
    cost = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy",
            "exp": "poisson"}.get(activations[-1], "mse")
    net = Network(spec, activations=activations, cost=cost, dtype=dtype, seed=seed,
                  backend=backend)
    rng = np.random.default_rng(seed)
    net.biases = [rng.normal(0, 0.5, b.shape) for b in net.biases]
    set_batch_norms(net, rng.random((64, net.n_inputs)), rng)
    return net


def n_params(net):
    """Every number the network keeps: weights, biases, BatchNorms' γ, β, running mean, var."""
    return sum(W.size + b.size for W, b in zip(net.weights, net.biases)) + sum(
        4 * bn.gamma.size for bn in net.batch_norms)


def set_batch_norms(net, X, rng):
    """Random γ and β and running statistics like a trained network's: near the statistics
    of what each BatchNorm normalises for inputs like ``X`` (random ones send whole layers
    into ReLU's flat half, and every output to the same constant)."""
    layers = net._layers
    rows = [k for k, layer in enumerate(layers) if layer.kind == "batchnorm"]
    for bn, k in zip(net.batch_norms, rows):
        c = bn.gamma.size
        z = net.forward(X.astype(net.dtype))[k - 1]  # the layer before: its pre-activation
        z = z.reshape(len(X), c, -1).astype(np.float64)
        bn.running_mean = z.mean(axis=(0, 2)) + rng.normal(0, 0.1, c) * z.std(axis=(0, 2))
        bn.running_var = z.var(axis=(0, 2)) * rng.uniform(0.6, 1.5, c)
        bn.gamma = rng.uniform(0.5, 1.5, c) * rng.choice([-1, 1], c)
        bn.beta = rng.normal(0, 0.3, c)


SHAPES = [  # (layers, activations): every activation, hidden and output
    ([20, 16, 12, 5], ["sigmoid", "tanh", "softmax"]),
    ([20, 16, 12, 5], ["relu", "identity", "identity"]),
    ([20, 16, 3], ["tanh", "sigmoid"]),
    ([20, 16, 4], ["exp", "exp"]),
    # three channels, a non-square kernel, overlapping pooling windows, a stride of 2
    ([(3, 11, 9), Conv2D(4, (3, 2), padding=1), MaxPool2D(3, stride=2),
      Conv2D(5, 2, stride=2), 6, 4], ["tanh", "sigmoid", "relu", "softmax"]),
    ([(2, 8, 8), Conv2D(3, 3), 5], ["exp", "identity"]),
    # BatchNorm after a conv (its activation after the BN) and after dense layers, average
    # pooling with overlapping windows and a floored size, dropout anywhere: every kind
    ([(3, 11, 9), Conv2D(4, (3, 2), padding=1), BatchNorm(), AvgPool2D(3, stride=2),
      Dropout(0.3), Conv2D(5, 2, stride=2), BatchNorm(eps=1e-3), MaxPool2D(2), 6, BatchNorm(),
      Dropout(0.5), 4], ["tanh", "sigmoid", "relu", "softmax"]),
    ([(2, 9, 9), AvgPool2D(2), Dropout(0.1), Conv2D(3, 3), BatchNorm(momentum=0.5), 5],
     ["relu", "identity"]),
    ([20, 16, BatchNorm(), Dropout(0.2), 12, BatchNorm(eps=0.1), 5],
     ["relu", "tanh", "softmax"]),
]


@pytest.mark.parametrize("spec, activations", SHAPES)
def test_onnx_every_layer_and_activation(ort, spec, activations):
    import onnx

    net = random_net(spec, activations, "float32", seed=len(activations))
    X = np.random.default_rng(1).random((33, net.n_inputs), dtype=np.float32)
    model = export.onnx_model(net)
    onnx.checker.check_model(model, full_check=True)
    got = run_onnx(session(ort, model.SerializeToString()), net, X)
    want = net.predict_proba(X)
    print(f"\nONNX vs predict_proba, float32, {spec}: max |diff| "
          f"{float(np.abs(got - want).max()):.3g}")
    assert want.std(axis=0).max() > 1e-3  # the rows' outputs differ: every layer matters
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=TOLERANCE)
    ops = [n.op_type for n in model.graph.node]
    kinds = [layer.kind for layer in net._layers]
    assert ops.count("BatchNormalization") == kinds.count("batchnorm")
    assert ops.count("AveragePool") == kinds.count("avgpool")
    assert "Dropout" not in ops


@pytest.mark.parametrize("spec, activations", SHAPES)
def test_onnx_float64(ort, spec, activations):
    """A float64 network exports as float64. onnxruntime's CPU provider has no float64 Conv
    (nor AveragePool), so CNNs are checked with onnx's own reference evaluator, and also exported as float32
    (``dtype="float32"``) for onnxruntime."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    net = random_net(spec, activations, "float64", seed=3, backend="numpy")
    X = np.random.default_rng(2).random((9, net.n_inputs))
    want = net.predict_proba(X)
    model = export.onnx_model(net)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    onnx.checker.check_model(model, full_check=True)
    Xin = X if net.input_shape is None else X.reshape(-1, *net.input_shape)
    got = ReferenceEvaluator(model).run(None, {"input": Xin})[0]
    assert got.dtype == np.float64
    diffs = {"reference": float(np.abs(got - want).max())}
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    if net.input_shape is None:  # (onnxruntime's float64 BatchNormalization and Gemm)
        got = run_onnx(session(ort, model.SerializeToString()), net, X)
        diffs["onnxruntime"] = float(np.abs(got - want).max())
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    as32 = export.onnx_model(net, dtype="float32")
    got = run_onnx(session(ort, as32.SerializeToString()), net, X.astype(np.float32))
    diffs["onnxruntime, exported as float32"] = float(np.abs(got - want).max())
    print(f"\nONNX vs predict_proba, float64, {spec}: max |diff| " + ", ".join(
        f"{k} {v:.3g}" for k, v in diffs.items()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_missing_onnx_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    net = Network([784, 4, 10], seed=0, backend="numpy")
    with pytest.raises(ImportError, match=r"pip install 'fastmlp\[onnx\]'"):
        export.to_onnx(net, tmp_path / "x.onnx")
    net.save(tmp_path / "m.npz")
    code, _, err = run(["export", tmp_path / "m.npz", "--onnx", tmp_path / "x.onnx"], capsys)
    assert_one_line_error(code, err, "pip install 'fastmlp[onnx]'")
    assert not (tmp_path / "x.onnx").exists()


# ------------------------------------------------------------------------------ web files


def test_web_export_files(tmp_path):
    net = random_net([(1, 28, 28), Conv2D(2, 3, stride=2, padding=1), MaxPool2D(2), 7, 10],
                     ["relu", "tanh", "softmax"], "float32", seed=0, backend="numpy")
    sizes = export.to_web(net, tmp_path / "site" / "deep")
    folder = tmp_path / "site" / "deep"
    assert sorted(sizes) == sorted(p.name for p in folder.iterdir()) == sorted(
        ["index.html", "app.js", "style.css", "model.json", "model.bin"])
    assert all((folder / name).stat().st_size == n for name, n in sizes.items())
    manifest = json.loads((folder / "model.json").read_text())
    data = np.frombuffer((folder / "model.bin").read_bytes(), "<f4")
    assert manifest["weights_bytes"] == data.nbytes and manifest["n_params"] == data.size
    assert manifest["dtype"] == "float32" and manifest["input_shape"] == [1, 28, 28]
    assert [layer["type"] for layer in manifest["layers"]] == ["conv", "pool", "dense", "dense"]
    weighted = [layer for layer in manifest["layers"] if layer["type"] != "pool"]
    for layer, W, b, act in zip(weighted, net.weights, net.biases, net.activations):
        for ref, array in ((layer["weights"], W), (layer["bias"], b)):
            block = data[ref["offset"]:ref["offset"] + ref["length"]]
            np.testing.assert_array_equal(block.reshape(ref["shape"]), array)
        assert layer["activation"] == act
    # nothing on the page loads from another host
    links = re.findall(r'(?:src|href)="([^"]*)"', (folder / "index.html").read_text())
    assert sorted(links) == ["app.js", "data:,", "style.css"]
    fetched = re.findall(r"fetch\(([^,)]*)", (folder / "app.js").read_text())
    assert fetched == ['"model.json"', "m.weights_file"]
    assert manifest["weights_file"] == "model.bin"


def test_web_export_of_the_old_kinds_is_version_1(tmp_path):
    """A network of dense, conv and max-pool layers exports the manifest fastmlp always
    wrote (version 1: a page of any fastmlp version reads it)."""
    net = Network([(1, 28, 28), Conv2D(2, 3), MaxPool2D(2), 7, 10], seed=0, backend="numpy")
    manifest, _ = export.web_manifest(net)
    assert manifest["version"] == 1
    assert [sorted(layer) for layer in manifest["layers"]] == [
        ["activation", "bias", "in_shape", "kernel_size", "out_shape", "padding", "stride",
         "type", "weights"],
        ["in_shape", "out_shape", "size", "stride", "type"],
        ["activation", "bias", "in_shape", "out_shape", "type", "weights"],
        ["activation", "bias", "in_shape", "out_shape", "type", "weights"]]


def test_web_export_batchnorm_avgpool_dropout(tmp_path):
    net = random_net(BN_CNN, ["tanh", "relu", "sigmoid", "softmax"], "float32", seed=2,
                     backend="numpy")
    export.to_web(net, tmp_path)
    manifest = json.loads((tmp_path / "model.json").read_text())
    data = np.frombuffer((tmp_path / "model.bin").read_bytes(), "<f4")
    assert manifest["version"] == export.WEB_VERSION == 2
    assert manifest["n_params"] == data.size == n_params(net)
    layers = manifest["layers"]
    assert [layer["type"] for layer in layers] == [
        "conv", "batchnorm", "pool", "dropout", "conv", "batchnorm", "avgpool", "dense",
        "batchnorm", "dropout", "dense"]
    # the activation moves to the BatchNorm after its layer (conv -> BN -> tanh)
    assert [layer.get("activation", "-") for layer in layers] == [
        None, "tanh", "-", "-", None, "relu", "-", None, "sigmoid", "-", "softmax"]
    assert layers[6]["size"] == layers[6]["stride"] == 2 and layers[3]["rate"] == 0.25

    def block(ref):
        return data[ref["offset"]:ref["offset"] + ref["length"]].reshape(ref["shape"])

    norms = [layer for layer in layers if layer["type"] == "batchnorm"]
    for layer, bn in zip(norms, net.batch_norms):
        assert layer["eps"] == 1e-5
        for field in ("gamma", "beta", "running_mean", "running_var"):
            np.testing.assert_array_equal(block(layer[field]), getattr(bn, field))
    weighted = [layer for layer in layers if "weights" in layer]
    for layer, W, b in zip(weighted, net.weights, net.biases):
        np.testing.assert_array_equal(block(layer["weights"]), W)
        np.testing.assert_array_equal(block(layer["bias"]), b)


def test_web_export_refuses_other_inputs(tmp_path):
    net = Network([20, 5, 3], seed=0, backend="numpy")
    with pytest.raises(ValueError, match="28x28"):
        export.to_web(net, tmp_path / "site")
    assert not (tmp_path / "site").exists()


# ------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.npz"
    Network([(1, 28, 28), Conv2D(2, 5, padding=2), MaxPool2D(2), 10], seed=1,
            backend="numpy").save(path)
    return path


def test_cli_export_onnx_and_web(ort, saved_model, tmp_path, capsys):
    code, out, err = run(["export", saved_model, "--onnx", "net.onnx", "--web", "site"], capsys)
    assert code == 0, err
    assert "net.onnx" in out and "site" in out and "http.server" in out
    net = Network.load(saved_model, backend="numpy")
    X = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    got = run_onnx(session(ort, tmp_path / "net.onnx"), net, X)
    np.testing.assert_allclose(got, net.predict_proba(X), atol=TOLERANCE)
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "model.bin").stat().st_size == 4 * sum(
        w.size + b.size for w, b in zip(net.weights, net.biases))


def test_cli_export_new_layer_kinds(ort, tmp_path, capsys):
    """A saved model with BatchNorm, AvgPool2D and Dropout layers exports both ways."""
    net = random_net([(1, 28, 28), Conv2D(3, 3, padding=1), BatchNorm(), AvgPool2D(2),
                      Dropout(0.2), 16, BatchNorm(), 10], ["relu", "relu", "softmax"],
                     "float32", seed=5, backend="numpy")
    net.save(tmp_path / "bn.npz")
    code, out, err = run(["export", tmp_path / "bn.npz", "--onnx", "bn.onnx", "--web", "site"],
                         capsys)
    assert code == 0, err
    loaded = Network.load(tmp_path / "bn.npz", backend="numpy")
    X = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    want = loaded.predict_proba(X)
    assert want.std(axis=0).max() > 1e-3
    np.testing.assert_allclose(run_onnx(session(ort, tmp_path / "bn.onnx"), loaded, X), want,
                               atol=TOLERANCE)
    manifest = json.loads((tmp_path / "site" / "model.json").read_text())
    assert manifest["version"] == 2 and manifest["architecture"] == repr(loaded.layers)
    assert (tmp_path / "site" / "model.bin").stat().st_size == 4 * n_params(loaded)


def test_cli_export_help(capsys):
    code, out, _ = run(["export", "--help"], capsys)
    assert code == 0 and "--onnx" in out and "--web" in out


@pytest.mark.parametrize("case", ["missing", "folder", "corrupt", "truncated", "no-target",
                                  "onnx-into-folder", "onnx-no-parent", "web-is-a-file",
                                  "not-784"])
def test_cli_export_bad_input(case, saved_model, tmp_path, capsys):
    model, target = saved_model, ["--onnx", "out.onnx"]
    fragment = ""
    if case == "missing":
        model, fragment = tmp_path / "nope.npz", "does not exist"
    elif case == "folder":
        model, fragment = tmp_path, "folder"
    elif case == "corrupt":
        model = tmp_path / "bad.npz"
        model.write_bytes(b"not a model at all")
        fragment = "not a fastmlp model"
    elif case == "truncated":
        model = tmp_path / "cut.npz"
        model.write_bytes(saved_model.read_bytes()[:300])
    elif case == "no-target":
        target, fragment = [], "--onnx FILE, --web DIR"
    elif case == "onnx-into-folder":
        (tmp_path / "d").mkdir()
        target, fragment = ["--onnx", "d"], "folder"
    elif case == "onnx-no-parent":
        target, fragment = ["--onnx", "no/such/out.onnx"], "does not exist"
    elif case == "web-is-a-file":
        (tmp_path / "f").write_text("x")
        target, fragment = ["--web", "f"], "not a folder"
    elif case == "not-784":
        model = tmp_path / "small.npz"
        Network([20, 3], seed=0, backend="numpy").save(model)
        target, fragment = ["--web", "site"], "28x28"
    code, _, err = run(["export", model, *target], capsys)
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "out.onnx").exists()
