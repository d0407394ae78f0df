"""Data augmentation (``Network.fit(augment=...)``): the gather kernel against
``reference.augment_batch``, the reference against plain image operations, both backends
training to the same parameters, augmentation off changing nothing, and bad arguments."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastmlp
from fastmlp import Conv2D, MaxPool2D, reference
from fastmlp._layout import Augment


def kernel(X, rows, augment, key, step):
    """The compiled gather with augmentation (fastmlp.kernels.augment.augment_rows)."""
    from fastmlp.kernels.augment import augment_rows

    out = np.full((rows.size, X.shape[1]), np.nan, X.dtype)
    augment_rows(X, rows, out, augment, key, step)
    return out


@st.composite
def batches(draw):
    C, H, W = draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    shift = draw(st.integers(0, max(H, W)))
    rotate = draw(st.sampled_from([0.0, 5.0, 90.0, 180.0, draw(st.floats(0, 180))]))
    scale = draw(st.sampled_from([0.0, 0.1, draw(st.floats(0, 0.9))]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n_rows, n = draw(st.integers(1, 12)), draw(st.integers(1, 20))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, C * H * W)).astype(dtype)
    X[rng.random(X.shape) < 0.5] = 0
    rows = rng.integers(0, n_rows, n)
    return (X, rows, Augment(shift, rotate, scale, C, H, W), int(rng.integers(2**62)),
            int(rng.integers(10**6)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_kernel_matches_reference(batch):
    X, rows, augment, key, step = batch
    got = kernel(X, rows, augment, key, step)
    expected = reference.augment_batch(X[rows], augment, key, step)
    assert got.dtype == expected.dtype == X.dtype
    if augment.rotate == 0 and augment.scale == 0:
        assert np.array_equal(got, expected)  # pixels copied as they are
    else:
        # cos/sin may differ in the last bit between numpy and numba's libm
        tol = 1e-12 if X.dtype == np.float64 else 1e-6
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * np.abs(X).max())


@pytest.mark.parametrize("shape", [(1, 5, 7), (3, 4, 4), (2, 1, 6)])
def test_shifts_move_pixels_exactly(shape):
    """The reference against a plain slice-and-pad shift, on both backends' draws."""
    C, H, W = shape
    rng = np.random.default_rng(1)
    X = rng.random((40, C * H * W))
    augment = Augment(3, 0.0, 0.0, C, H, W)
    dx, dy, _, _ = reference.augment_parameters(augment, 99, 4, len(X))
    assert set(dx) | set(dy) <= set(range(-3, 4)) and len(set(dx)) > 3  # all shifts occur
    expected = np.zeros((len(X), C, H + 6, W + 6))
    for r, image in enumerate(X.reshape(-1, C, H, W)):
        x0, y0 = 3 + int(dx[r]), 3 + int(dy[r])
        expected[r, :, y0:y0 + H, x0:x0 + W] = image  # pixel (y, x) lands on (y+dy, x+dx)
    expected = expected[:, :, 3:3 + H, 3:3 + W].reshape(len(X), -1)
    assert np.array_equal(reference.augment_batch(X, augment, 99, 4), expected)
    assert np.array_equal(kernel(X, np.arange(len(X)), augment, 99, 4), expected)


def test_rotation_and_scaling_are_the_affine_map(monkeypatch):
    """With the draws fixed: 90 degrees is np.rot90 (up to cos(pi/2) ~ 6e-17), a scaling by
    2 of a 1-pixel-wide line about the centre samples between pixels (bilinear)."""
    H = W = 5
    image = np.random.default_rng(2).random((1, H * W))
    augment = Augment(0, 90.0, 0.5, 1, H, W)
    zero, one = np.zeros(1), np.ones(1)
    monkeypatch.setattr(reference, "augment_parameters",
                        lambda *a: (zero, zero, np.full(1, np.pi / 2), one))
    turned = reference.augment_batch(image, augment, 0, 0).reshape(H, W)
    expected = np.rot90(image.reshape(H, W))
    if not np.allclose(turned, expected, atol=1e-12):
        expected = np.rot90(image.reshape(H, W), -1)
    np.testing.assert_allclose(turned, expected, atol=1e-12)
    # Scaled by 2 about the centre (2, 2): output pixel x reads the input at 2 + (x - 2)/2.
    monkeypatch.setattr(reference, "augment_parameters",
                        lambda *a: (zero, zero, zero, np.full(1, 2.0)))
    ramp = np.tile(np.arange(W, dtype=float), (H, 1)).reshape(1, -1)
    np.testing.assert_allclose(reference.augment_batch(ramp, augment, 0, 0).reshape(H, W),
                               np.tile(2 + (np.arange(W) - 2) / 2, (H, 1)))
    # A shift of 1 to the right with the rotation path (no rotation) is still exact.
    monkeypatch.setattr(reference, "augment_parameters",
                        lambda *a: (one, zero, zero, one))
    moved = reference.augment_batch(ramp, augment, 0, 0).reshape(H, W)
    assert np.array_equal(moved, np.tile([0.0, 0, 1, 2, 3], (H, 1)))


NETWORKS = {
    "cnn": ([(2, 7, 6), Conv2D(3, 3, padding=1), MaxPool2D(2), 8, 3], False),
    # an MLP given its input as an image; its sparse batches go in through CSR
    "mlp": ([(1, 8, 8), 12, 3], True),
}


@pytest.mark.parametrize("augment", [2, {"shift": 1, "rotate": 20.0, "scale": 0.15}])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_both_backends_train_to_the_same_parameters(name, augment):
    layers, sparse = NETWORKS[name]
    rng = np.random.default_rng(3)
    n_in = int(np.prod(layers[0]))
    X = rng.random((90, n_in))
    if sparse:
        X[X < 0.8] = 0
    y = rng.integers(0, 3, 90)
    nets = [fastmlp.Network(layers, backend=b, dtype="float64", seed=5)
            for b in ("numba", "numpy")]
    histories = [net.fit(X, y, epochs=2, batch_size=32, learning_rate=0.1, dropout=0.1,
                         augment=augment, verbose=False) for net in nets]
    fast, ref = nets
    for a, b in zip(fast.weights + fast.biases, ref.weights + ref.biases):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(histories[0].loss, histories[1].loss, rtol=1e-9)
    # ...and augmentation changed the path: not the parameters of a plain fit
    plain = fastmlp.Network(layers, backend="numpy", dtype="float64", seed=5)
    plain.fit(X, y, epochs=2, batch_size=32, learning_rate=0.1, dropout=0.1, verbose=False)
    assert not np.allclose(plain.weights[0], ref.weights[0], atol=1e-6)


@pytest.mark.parametrize("off", [None, 0, {"shift": 0}, {"shift": 0, "rotate": 0, "scale": 0}])
def test_augmentation_off_changes_nothing(off):
    """Off is the plain gather: the same bits as a fit without the argument."""
    rng = np.random.default_rng(4)
    X, y = rng.random((64, 16)), rng.integers(0, 2, 64)
    results = []
    for kwargs in ({}, {"augment": off}):
        net = fastmlp.Network([(1, 4, 4), 6, 2], seed=2)
        net.fit(X, y, epochs=2, batch_size=16, verbose=False, **kwargs)
        results.append(net._params.copy())
    assert np.array_equal(*results)


def test_prediction_and_validation_see_the_images_as_they_are():
    rng = np.random.default_rng(6)
    X, y = rng.random((64, 16)), rng.integers(0, 2, 64)
    net = fastmlp.Network([(1, 4, 4), 6, 2], dtype="float64", seed=2)
    history = net.fit(X, y, epochs=1, batch_size=16, augment=1, validation_data=(X, y),
                      verbose=False)
    expected = reference.predict_proba(net.weights, net.biases, net.activations, X)
    np.testing.assert_allclose(net.predict_proba(X), expected, rtol=1e-12)
    assert history.val_loss[0] == pytest.approx(net.evaluate(X, y)["loss"])


BAD = {
    "string": ("up", "augment must be None, an int"),
    "float shift": (1.5, "augment must be None, an int"),
    "bool": (True, "augment must be None, an int"),
    "negative": (-1, "augment shift must be a whole number of pixels in 0..8"),
    "past the image": (9, "augment shift must be a whole number of pixels in 0..8"),
    "float shift in dict": ({"shift": 2.0}, "augment shift"),
    "unknown key": ({"shift": 1, "rotation": 5}, "unknown key 'rotation'"),
    "nan rotate": ({"rotate": float("nan")}, "augment rotate (degrees) must be a finite"),
    "rotate past 180": ({"rotate": 200}, "augment rotate (degrees) must be in [0, 180]"),
    "negative scale": ({"scale": -0.1}, "augment scale"),
    "scale of 1": ({"scale": 1.0}, "augment scale (a fraction) must be in [0, 1)"),
    "inf scale": ({"scale": float("inf")}, "augment scale"),
    "string rotate": ({"rotate": "10"}, "augment rotate"),
}


@pytest.mark.parametrize("augment,fragment", list(BAD.values()), ids=list(BAD))
def test_bad_augment_arguments(augment, fragment):
    net = fastmlp.Network([(1, 8, 6), 4, 2], backend="numpy", seed=0)
    X, y = np.zeros((4, 48)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=None) as info:
        net.fit(X, y, epochs=1, augment=augment, verbose=False)
    assert fragment in str(info.value)


def test_augmentation_needs_an_image_input_and_dense_rows():
    X, y = np.zeros((4, 16)), np.array([0, 1, 0, 1])
    flat = fastmlp.Network([16, 4, 2], backend="numpy", seed=0)
    with pytest.raises(ValueError, match="augment needs an image input"):
        flat.fit(X, y, epochs=1, augment=2, verbose=False)
    flat.fit(X, y, epochs=1, augment=0, verbose=False)  # off: fine
    scipy_sparse = pytest.importorskip("scipy.sparse")
    image = fastmlp.Network([(1, 4, 4), 4, 2], seed=0)
    with pytest.raises(ValueError, match="augment needs dense X"):
        image.fit(scipy_sparse.csr_matrix(X), y, epochs=1, augment=1, verbose=False)


def test_the_gather_compiles_augmentation_only_when_it_is_on():
    """``gather_batch`` chooses at compile time on the Input's ``augment`` field
    (kernels/augment.py, an @overload): with None it is the plain gather, and augment_rows
    is not compiled for it."""
    from numba import njit

    from fastmlp._layout import Input
    from fastmlp.kernels import augment as module

    @njit
    def gather(inp, rows, out, key, step):
        module.gather_batch(inp, rows, out, key, step)

    rng = np.random.default_rng(7)
    X, rows = rng.random((10, 12)), np.array([3, 1, 4, 1, 5])
    none = np.zeros(0, np.int64)
    out = np.empty((5, 12))
    before = len(module.augment_rows.signatures)
    gather(Input(X, none, none.astype(np.int32), X[0, :0], False, 0.5, None), rows, out, 9, 2)
    assert len(module.augment_rows.signatures) == before
    assert np.array_equal(out, X[rows])
    augment = Augment(1, 0.0, 0.0, 1, 3, 4)
    gather(Input(X, none, none.astype(np.int32), X[0, :0], False, 0.5, augment), rows, out, 9,
           2)
    assert np.array_equal(out, reference.augment_batch(X[rows], augment, 9, 2))
