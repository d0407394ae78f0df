"""fastmlp.images: MNIST-style preprocessing of arbitrary digit pictures."""

import gzip

import numpy as np
import pytest

from fastmlp.images import load_image, resize, to_mnist


@pytest.fixture(scope="module")
def digits(data_dir):
    """The first 200 real MNIST test digits, uint8 (n, 28, 28), read with gzip + numpy."""
    folder = data_dir / "mnist"
    path = folder / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes()) if path.exists() else (folder / path.stem).read_bytes()
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:200]


def centre_of_mass(a):
    a = np.asarray(a, dtype=np.float64)
    m = a.sum()
    return (a.sum(1) @ np.arange(a.shape[0])) / m, (a.sum(0) @ np.arange(a.shape[1])) / m


def bbox(a, threshold=0.0):
    r = np.flatnonzero((a > threshold).any(1))
    c = np.flatnonzero((a > threshold).any(0))
    return r[0], r[-1] + 1, c[0], c[-1] + 1


def corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_output_type_and_range(digits):
    out = to_mnist(digits[0])
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() == pytest.approx(1.0)


def test_mnist_digit_is_a_fixed_point(digits):
    # MNIST digits are already prepared this way: they must come back (almost) unchanged.
    for d in digits[:50]:
        assert corr(to_mnist(d), d / 255.0) > 0.99


def test_upscaled_padded_inverted_digit_comes_back(digits):
    d = digits[0] / 255.0
    r0, r1, c0, c1 = bbox(d)
    big = np.kron(d[r0:r1, c0:c1], np.ones((7, 7)))  # exact 7x upscale of the digit's box
    page = np.zeros((300, 420))
    page[20 : 20 + big.shape[0], 250 : 250 + big.shape[1]] = big  # far off-centre
    photo = np.round(255 * (1.0 - page)).astype(np.uint8)  # dark ink on white paper
    out = to_mnist(photo)
    assert corr(out, d) > 0.98


def test_non_integer_rescale_still_close(digits):
    cs = []
    for d in digits[:40]:
        big = resize(d / 255.0, (173, 173))  # linear upscale by a non-integer factor
        canvas = np.full((260, 230), 0.9)  # light-grey paper
        canvas[60:233, 40:213] = 0.9 - 0.8 * big  # grey ink
        cs.append(corr(to_mnist(canvas), d / 255.0))
    assert np.mean(cs) > 0.9 and np.median(cs) > 0.9


def test_centre_of_mass_at_centre(digits):
    rng = np.random.default_rng(0)
    for d in digits[:30]:
        h, w = rng.integers(40, 400, size=2)
        canvas = np.zeros((h + 60, w + 60))
        canvas[30 : 30 + h, 30 : 30 + w] = resize(d / 255.0, (h, w))
        cy, cx = centre_of_mass(to_mnist(canvas))
        assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_aspect_ratio_kept():
    img = np.zeros((300, 300), dtype=np.uint8)
    img[50:250, 120:170] = 255  # 200 x 50 bar: 4:1
    out = to_mnist(img)
    r0, r1, c0, c1 = bbox(out, 0.5)
    assert r1 - r0 == 20 and c1 - c0 == 5
    wide = to_mnist(img.T)
    r0, r1, c0, c1 = bbox(wide, 0.5)
    assert r1 - r0 == 5 and c1 - c0 == 20


def test_tiny_digit_is_enlarged_and_small_input_ok():
    img = np.zeros((6, 5))
    img[1:5, 2] = 1.0  # a 4-pixel "1"
    out = to_mnist(img)
    r0, r1, c0, c1 = bbox(out, 0.5)
    assert r1 - r0 == 20 and c1 - c0 <= 6


def test_float_and_uint8_agree(digits):
    d = digits[3]
    np.testing.assert_allclose(to_mnist(d), to_mnist(d / 255.0), atol=1e-6)
    np.testing.assert_allclose(to_mnist(d), to_mnist(d.astype(np.int64)), atol=1e-6)
    assert to_mnist(d > 128).shape == (28, 28)  # boolean masks work too


def test_light_background_inverted_and_dark_kept():
    a = np.zeros((50, 50))
    a[10:40, 20:25] = 1.0
    np.testing.assert_allclose(to_mnist(a), to_mnist(1.0 - a), atol=1e-6)


def test_off_edge_digit_is_not_clipped():
    # ink in one corner, lopsided mass: the shift must be clipped to keep every pixel
    a = np.zeros((100, 100))
    a[0:100, 0:3] = 1.0
    a[0:3, 0:100] = 1.0  # an "L" rotated: all mass along two edges
    out = to_mnist(a)
    r0, r1, c0, c1 = bbox(out, 0.5)
    assert r1 - r0 == 20 and c1 - c0 == 20  # nothing fell off
    assert 0 <= r0 and r1 <= 28 and 0 <= c0 and c1 <= 28


@pytest.mark.parametrize(
    "bad, words",
    [
        (np.zeros((28, 28)), "no ink"),
        (np.full((10, 10), 255, dtype=np.uint8), "no ink"),
        (np.zeros(784), "2-D"),
        (np.zeros((2, 28, 28)), "2-D"),
        (np.zeros((0, 28)), "empty"),
        (np.zeros((28, 0)), "empty"),
        (np.array([[0.0, np.nan], [1.0, 0.0]]), "NaN"),
        (np.array([[0.0, np.inf], [1.0, 0.0]]), "NaN or infinite"),
        (np.array([[0.0, 2.0], [1.0, 0.0]]), "[0, 1]"),
        (np.array([[0, 300], [1, 0]]), "0..255"),
        (np.array([["a", "b"], ["c", "d"]]), "numbers"),
        ([[0, 1], [1]], "array"),
    ],
)
def test_errors(bad, words):
    with pytest.raises(ValueError) as info:
        to_mnist(bad)
    assert words in str(info.value)


def test_load_image_roundtrip(tmp_path, digits):
    Image = pytest.importorskip("PIL.Image")
    d = digits[7]
    # dark ink on white RGB
    rgb = np.repeat((255 - d)[..., None], 3, axis=2).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp_path / "d.png")
    g = load_image(tmp_path / "d.png")
    assert g.ndim == 2 and g.dtype == np.float64 and 0 <= g.min() and g.max() <= 1
    assert corr(to_mnist(g), d / 255.0) > 0.99
    # dark ink on a transparent background: transparency must read as background
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = d  # black ink whose opacity is the digit
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    assert corr(to_mnist(load_image(tmp_path / "t.png")), d / 255.0) > 0.99
    # white ink on transparent
    rgba[..., :3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "w.png")
    assert corr(to_mnist(load_image(tmp_path / "w.png")), d / 255.0) > 0.99


def test_load_image_errors(tmp_path):
    pytest.importorskip("PIL")
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="image"):
        load_image(tmp_path / "junk.png")


def test_load_image_without_pillow(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_pil(name, *args, **kwargs):
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError("No module named 'PIL'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pil)
    with pytest.raises(ImportError, match=r"pip install 'fastmlp\[images\]' \(from a checkout: pip install -e '\.\[images\]'"):
        load_image(tmp_path / "x.png")
