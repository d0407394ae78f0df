"""BatchNorm, AvgPool2D and Dropout layers: the reference against PyTorch's modules of the same
name (float64) and against central differences, the compiled kernels against the reference
on random networks (both modes, every gradient, training), and the specs' checks, files and
public views."""

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fastmlp import AvgPool2D, BatchNorm, Conv2D, Dropout, MaxPool2D, Network
from fastmlp import _layout as layout
from fastmlp.layers import dropout_rates, parse, plan, row_activations

CNN = [(2, 8, 8), Conv2D(5, 3, padding=1), BatchNorm(), MaxPool2D(2), Dropout(0.3),
       Conv2D(4, 2), BatchNorm(momentum=0.3), AvgPool2D(2, stride=1), 12, BatchNorm(),
       Dropout(0.2), 3]


def data(spec, n, seed=0):
    rng = np.random.default_rng(seed)
    first = spec[0]
    shape = (n, *first) if isinstance(first, tuple) else (n, first)
    return rng.normal(size=shape), rng.integers(0, spec[-1], n)


def max_error(a, b):
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(a, b))


def all_params(net):
    """Every trainable array and running statistic, in a fixed order."""
    return [p for pair in net._trainable_views(net._params) for p in pair] + [
        getattr(bn, f) for bn in net.batch_norms for f in ("running_mean", "running_var")]


# --- the layer list --------------------------------------------------------------------------


def test_batchnorm_takes_the_activation_of_the_layer_it_follows():
    layers = plan(CNN)
    names = row_activations(layers, ["relu", "tanh", "sigmoid", "softmax"])
    assert names == [None, "relu", None, None, None, "tanh", None, None, "sigmoid", None,
                     "softmax"]
    # fit's shorthand lands after each hidden block (after its BatchNorm), beside the
    # Dropout layers' own rates; a list gives one rate per hidden layer with weights
    assert dropout_rates(layers, 0.1) == [0, 0.1, 0, 0.3, 0, 0.1, 0, 0, 0.1, 0.2, 0]
    assert dropout_rates(layers, [0.1, 0.0, 0.4]) == [0, 0.1, 0, 0.3, 0, 0, 0, 0, 0.4, 0.2, 0]


@pytest.mark.parametrize("spec, match", [
    ([(1, 8, 8), BatchNorm(), 3], r"must come right after a Conv2D or a dense width"),
    ([(1, 8, 8), Conv2D(2, 3), MaxPool2D(2), BatchNorm(), 3], r"right after a Conv2D"),
    ([4, 5, Dropout(0.1), BatchNorm(), 3], r"right after a Conv2D"),
    ([4, 5, AvgPool2D(2), 3], r"needs an image input"),
    ([(1, 4, 4), AvgPool2D(5), 3], r"5x5 window does not fit its 4x4 input"),
    ([4, 5, Dropout(0.5)], r"last layer must be a dense width"),
    ([4, 5, BatchNorm()], r"last layer must be a dense width"),
    ([BatchNorm(), 3], r"first entry must be the input"),
])
def test_bad_layer_lists_are_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        Network(spec)


@pytest.mark.parametrize("make, match", [
    (lambda: Dropout(1.0), r"Dropout rate must be in \[0, 1\)"),
    (lambda: Dropout(-0.1), r"Dropout rate must be in \[0, 1\)"),
    (lambda: Dropout(float("nan")), r"Dropout rate must be a finite number"),
    (lambda: Dropout("0.5"), r"Dropout rate must be a finite number"),
    (lambda: BatchNorm(eps=0), r"BatchNorm eps must be in \(0, inf\)"),
    (lambda: BatchNorm(momentum=1.5), r"BatchNorm momentum must be in \(0, 1\]"),
    (lambda: BatchNorm(momentum=True), r"BatchNorm momentum must be a finite number"),
    (lambda: AvgPool2D(0), r"AvgPool2D size must be an integer >= 1"),
    (lambda: AvgPool2D(2, stride=2**40), r"AvgPool2D stride must be at most"),
])
def test_bad_layer_settings_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_the_cli_grammar_has_the_new_tokens():
    assert parse("conv32k3p1,bn,pool2,avg2,avg3s1,drop0.25,drop.5,drop0,128,bn") == [
        Conv2D(32, 3, padding=1), BatchNorm(), MaxPool2D(2), AvgPool2D(2), AvgPool2D(3, 1),
        Dropout(0.25), Dropout(0.5), Dropout(0.0), 128, BatchNorm()]
    for bad, match in [("drop1.5", r"'drop1.5': Dropout rate must be in"),
                       ("dropx", r"bad layer 'dropx': use"), ("bn2", r"bad layer 'bn2'"),
                       ("avg0", r"'avg0': AvgPool2D size must be"), ("drop1e-3", r"use")]:
        with pytest.raises(ValueError, match=match):
            parse(bad)


def test_summary_shows_every_layer_and_the_running_statistics():
    text = Network(CNN, seed=0).summary()
    conv = next(line for line in text.splitlines() if line.startswith("Conv2D(5, 3"))
    assert "relu" not in conv and "BatchNorm() relu" in text  # the BN applies it
    assert "10 + 10 running" in text  # γ, β of 5 channels; running mean and variance
    assert "AvgPool2D(2, stride=1)" in text and "Dropout(0.3)" in text
    assert "running statistics" in text.splitlines()[-2]
    assert "net.batch_norms" in text.splitlines()[-1]
    assert "BatchNorm" not in Network([4, 5, 3]).summary()


# --- public views and files ------------------------------------------------------------------


def test_batchnorm_parameters_are_live_views_that_start_as_pytorchs():
    net = Network(CNN, seed=0)
    first = net.batch_norms[0]
    assert [bn.gamma.shape for bn in net.batch_norms] == [(5,), (4,), (12,)]
    assert (first.gamma == 1).all() and (first.beta == 0).all()
    assert (first.running_mean == 0).all() and (first.running_var == 1).all()
    X, _ = data(CNN, 10)
    before = net.predict_proba(X)
    first.beta = np.full(5, 0.5)  # assignment copies into the parameters
    first.gamma[...] = 2.0  # so does writing into the view
    assert not np.allclose(net.predict_proba(X), before)
    start = net._table[1, layout.PARAM]
    assert net._params[start:start + 10].tolist() == [2.0] * 5 + [0.5] * 5
    with pytest.raises(ValueError, match=r"gamma: expected shape \(5,\), got \(4,\)"):
        first.gamma = np.ones(4)
    with pytest.raises(ValueError, match="running_var must be >= 0"):
        first.running_var = -np.ones(5)
    with pytest.raises(ValueError, match="beta must be finite real numbers"):
        first.beta = np.full(5, np.nan)
    with pytest.raises(ValueError, match="gamma must be finite real numbers"):
        first.gamma = np.array(["a"] * 5)
    with pytest.raises(AttributeError, match="not 'weight'"):
        first.weight = np.ones(5)


def test_training_mode_passes_change_no_running_statistics():
    net = Network(CNN, seed=0, dtype="float64")
    X, y = data(CNN, 16)
    stats = [bn.running_mean.copy() for bn in net.batch_norms]
    train_out = net.forward(X, training=True)[-1]
    assert not np.allclose(train_out, net.forward(X)[-1])  # batch vs running statistics
    net.loss(X, y, training=True)
    net.gradients(X, y)
    assert all((bn.running_mean == s).all() for bn, s in zip(net.batch_norms, stats))
    with pytest.raises(ValueError, match="training must be True or False"):
        net.forward(X, training="yes")


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_save_and_load_keep_the_batchnorm_statistics(tmp_path, backend):
    net = Network(CNN, seed=1, backend=backend)
    X, y = data(CNN, 40)
    net.fit(X, y, epochs=2, batch_size=16, verbose=False)
    path = tmp_path / "bn.npz"
    net.save(path)
    again = Network.load(path, backend=backend)
    assert again.layers == net.layers
    np.testing.assert_array_equal(again.predict_proba(X), net.predict_proba(X))
    for a, b in zip(again.batch_norms, net.batch_norms):
        for field in a.FIELDS:
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    arrays = dict(np.load(path))
    assert {"bn0_gamma", "bn0_beta", "bn0_mean", "bn0_var", "bn2_var"} <= set(arrays)
    # a damaged file: a negative running variance, a missing array
    arrays["bn1_var"] = -arrays["bn1_var"]
    np.savez(tmp_path / "negative.npz", **arrays)
    with pytest.raises(ValueError, match="bn1_var .*negative"):
        Network.load(tmp_path / "negative.npz")
    del arrays["bn1_var"]
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(ValueError, match="bn1_var"):
        Network.load(tmp_path / "missing.npz")


def test_a_network_without_the_new_layers_saves_the_same_arrays_as_before(tmp_path):
    net = Network([(1, 6, 6), Conv2D(2, 3), MaxPool2D(2), 3], seed=0)
    net.save(tmp_path / "plain.npz")
    assert sorted(np.load(tmp_path / "plain.npz")) == ["W0", "W1", "b0", "b1", "header"]


# --- the reference against PyTorch (float64) ---------------------------------------------


def torch_model(net):
    """The PyTorch twin of ``net`` with the same parameters (float64), or None."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    modules, weighted, norms = [], iter(zip(net.weights, net.biases)), iter(net.batch_norms)
    names = row_activations(net._layers, net.activations)
    flat = False
    for layer, act in zip(net._layers, names):
        spec = layer.spec
        if layer.kind == "dense":
            if not flat:
                modules.append(nn.Flatten())
                flat = True
            W, b = next(weighted)
            m = nn.Linear(W.shape[1], W.shape[0])
            m.weight.data, m.bias.data = torch.tensor(W), torch.tensor(b)
        elif layer.kind == "conv":
            W, b = next(weighted)
            m = nn.Conv2d(W.shape[1], W.shape[0], spec.kernel_size, spec.stride, spec.padding)
            m.weight.data, m.bias.data = torch.tensor(W), torch.tensor(b)
        elif layer.kind == "pool":
            m = nn.MaxPool2d(spec.size, spec.stride)
        elif layer.kind == "avgpool":
            m = nn.AvgPool2d(spec.size, spec.stride)
        elif layer.kind == "dropout":
            m = nn.Identity()  # (masks differ from PyTorch's generator: compared without)
        else:
            bn = next(norms)
            m = (nn.BatchNorm1d if flat else nn.BatchNorm2d)(bn.gamma.size, eps=spec.eps,
                                                             momentum=spec.momentum)
            m.weight.data, m.bias.data = torch.tensor(bn.gamma), torch.tensor(bn.beta)
            m.running_mean.data = torch.tensor(bn.running_mean)
            m.running_var.data = torch.tensor(bn.running_var)
        modules.append(m)
        if act is not None and act != "softmax":
            modules.append({"relu": nn.ReLU(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(),
                            "identity": nn.Identity()}[act])
    return nn.Sequential(*modules).double()


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_agrees_with_pytorch_in_both_modes_with_every_gradient_and_the_running_update(
        backend):
    torch = pytest.importorskip("torch")
    spec = [s for s in CNN if not isinstance(s, Dropout)]
    net = Network(spec, activations=["relu", "tanh", "sigmoid", "softmax"], dtype="float64",
                  seed=2, backend=backend)
    rng = np.random.default_rng(3)
    for bn in net.batch_norms:  # not the initial 1, 0, 0, 1: every term counts
        c = bn.gamma.size
        bn.gamma, bn.beta = rng.uniform(0.5, 1.5, c), rng.normal(size=c)
        bn.running_mean, bn.running_var = rng.normal(size=c), rng.uniform(0.5, 2, c)
    X, y = data(spec, 24, seed=4)
    model = torch_model(net)
    tX = torch.tensor(X)
    model.eval()
    with torch.no_grad():
        eval_out = torch.softmax(model(tX), dim=1).numpy()
    np.testing.assert_allclose(net.predict_proba(X), eval_out, rtol=1e-10, atol=1e-12)
    model.train()
    logits = model(tX)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y))
    loss.backward()
    np.testing.assert_allclose(net.forward(X, training=True)[-1],
                               torch.softmax(logits, 1).detach().numpy(), rtol=1e-10,
                               atol=1e-12)
    assert net.loss(X, y, training=True) == pytest.approx(loss.item(), rel=1e-12)
    params = [p for p in model.parameters()]
    grads = [g for pair in net.gradients(X, y) for g in pair]
    assert len(grads) == len(params)
    for g, p in zip(grads, params):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-8, atol=1e-12)
    # One SGD step over the whole batch: PyTorch's train-mode forward above moved its running
    # statistics once, as fastmlp's step does.
    net.fit(X, y, epochs=1, batch_size=len(X), learning_rate=0.1, shuffle=False,
            verbose=False)
    with torch.no_grad():
        for p in params:
            p -= 0.1 * p.grad
    bns = [m for m in model if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    for bn, m in zip(net.batch_norms, bns):
        np.testing.assert_allclose(bn.running_mean, m.running_mean.numpy(), rtol=1e-12,
                                   atol=1e-14)
        np.testing.assert_allclose(bn.running_var, m.running_var.numpy(), rtol=1e-12)
        np.testing.assert_allclose(bn.gamma, m.weight.detach().numpy(), rtol=1e-10)
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(net.predict_proba(X), torch.softmax(model(tX), 1).numpy(),
                                   rtol=1e-9, atol=1e-12)


def test_reference_gradients_match_central_differences():
    spec = [s for s in CNN if not isinstance(s, Dropout)]
    net = Network(spec, dtype="float64", seed=5, backend="numpy")
    rng = np.random.default_rng(6)
    for bn in net.batch_norms:
        bn.gamma, bn.beta = rng.uniform(0.5, 1.5, bn.gamma.size), rng.normal(size=bn.gamma.size)
    X, y = data(spec, 7, seed=7)
    grads = net.gradients(X, y, l2=0.1)
    for (p, q), (dp, dq) in zip(net._trainable_views(net._params), grads):
        for array, grad in ((p, dp), (q, dq)):  # (views: a dense W is a transpose)
            for _ in range(4):
                i = tuple(int(rng.integers(d)) for d in array.shape)
                keep = array[i]
                array[i] = keep + 1e-6
                up = net.loss(X, y, l2=0.1, training=True)
                array[i] = keep - 1e-6
                down = net.loss(X, y, l2=0.1, training=True)
                array[i] = keep
                assert (up - down) / 2e-6 == pytest.approx(grad[i], rel=1e-5, abs=1e-8)


# --- the kernels against the reference on random networks --------------------------------


@st.composite
def networks(draw):
    """A random image network using every new layer kind somewhere, or a dense one."""
    if draw(st.booleans()):
        c, side = draw(st.integers(1, 3)), draw(st.integers(5, 9))
        spec = [(c, side, side), Conv2D(draw(st.integers(1, 6)), draw(st.integers(1, 3)),
                                        padding=draw(st.integers(0, 1)))]
        if draw(st.booleans()):
            spec.append(BatchNorm(momentum=draw(st.sampled_from([0.1, 0.5, 1.0]))))
        size = draw(st.integers(1, 2))
        spec.append(draw(st.sampled_from([AvgPool2D(size, draw(st.integers(1, 2))),
                                          MaxPool2D(size)])))
        if draw(st.booleans()):
            spec.append(Dropout(draw(st.sampled_from([0.0, 0.2, 0.5]))))
    else:
        spec = [draw(st.integers(1, 12))]
    width = draw(st.integers(1, 20))
    spec += [width, BatchNorm(eps=draw(st.sampled_from([1e-5, 1e-2])))]
    if draw(st.booleans()):
        spec.append(Dropout(0.3))
    spec.append(draw(st.integers(2, 5)))
    return spec


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(spec=networks(), n=st.integers(2, 40), batch=st.integers(2, 17), seed=st.integers(0, 99))
@example(spec=[(1, 5, 5), Conv2D(2, 3), BatchNorm(), AvgPool2D(2, 1), Dropout(0.5), 3,
               BatchNorm(), 2], n=9, batch=4, seed=0)
def test_kernels_agree_with_the_reference(spec, n, batch, seed):
    """float64: forward in both modes, the training-mode loss, every gradient (γ, β
    included), and two epochs of training with dropout (same masks) and running
    statistics."""
    X, y = data(spec, n, seed)
    nets = [Network(spec, dtype="float64", seed=seed, backend=b) for b in ("numba", "numpy")]
    fast, ref = nets
    for training in (False, True):
        assert max_error(fast.forward(X, training), ref.forward(X, training)) < 1e-10
        assert fast.loss(X, y, training=training) == pytest.approx(
            ref.loss(X, y, training=training), rel=1e-10)
    assert max_error([g for p in fast.gradients(X, y, l2=0.01) for g in p],
                     [g for p in ref.gradients(X, y, l2=0.01) for g in p]) < 1e-9
    for net in nets:
        net.fit(X, y, epochs=2, batch_size=batch, optimizer="adam", learning_rate=0.01,
                dropout=0.1, verbose=False)
    assert fast.history.loss == pytest.approx(ref.history.loss, rel=1e-9)
    assert max_error(all_params(fast), all_params(ref)) < 1e-7
    assert max_error(fast.forward(X), ref.forward(X)) < 1e-6


def test_float32_training_with_the_new_layers_learns():
    spec = [(1, 8, 8), Conv2D(4, 3, padding=1), BatchNorm(), AvgPool2D(2), Dropout(0.1), 16,
            BatchNorm(), 2]
    rng = np.random.default_rng(0)
    X = rng.random((200, 1, 8, 8)).astype(np.float32)
    y = (X[:, 0, :4].mean(axis=(1, 2)) > X[:, 0, 4:].mean(axis=(1, 2))).astype(int)
    net = Network(spec, seed=0)
    before = net.evaluate(X, y)["accuracy"]
    net.fit(X, y, epochs=15, batch_size=20, optimizer="adam", learning_rate=0.01,
            verbose=False)
    after = net.evaluate(X, y)["accuracy"]
    assert after > max(0.9, before)
    assert all(math.isfinite(v) for v in net.history.loss)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_models_saved_by_0_2_0_load_and_predict_the_same(backend):
    """tests/data holds a CNN and an MLP saved by fastmlp 0.2.0 (before these layer kinds),
    with the predictions 0.2.0's numpy backend made."""
    folder = Path(__file__).parent / "data"
    expected = np.load(folder / "predictions-0.2.0.npz")
    X = expected["X"]
    cnn = Network.load(folder / "cnn-0.2.0.npz", backend=backend)
    mlp = Network.load(folder / "mlp-0.2.0.npz", backend=backend)
    assert cnn.batch_norms == [] and mlp.is_mlp
    tol = 0 if backend == "numpy" else 1e-6
    np.testing.assert_allclose(cnn.predict_proba(X), expected["cnn"], rtol=0, atol=tol)
    np.testing.assert_allclose(mlp.predict_proba(X.reshape(len(X), -1)), expected["mlp"],
                               rtol=0, atol=tol)
