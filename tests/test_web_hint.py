"""The draw page's hint: a drawing unlike MNIST's digits (a house...) or an unsure network
is said so, not silently read as a confident digit. Drawings are made the way the page makes
them: 20-px strokes on a 280 x 280 pad, averaged down to 140 x 140."""

import threading

import numpy as np
import pytest

from fastmlp.images import to_mnist
from fastmlp.web.server import UNSURE_BELOW, make_server, serve
from fastmlp.web.typicality import DigitSpace

Image = pytest.importorskip("PIL.Image")
ImageDraw = pytest.importorskip("PIL.ImageDraw")


def pad(lines=(), ellipses=()):
    """Pixels as the page sends them: strokes 20 px wide on the 280 x 280 pad, 140 x 140."""
    im = Image.new("L", (280, 280), 0)
    d = ImageDraw.Draw(im)
    for points in lines:
        d.line(points, fill=255, width=20, joint="curve")
        for x, y in points:
            d.ellipse([x - 10, y - 10, x + 10, y + 10], fill=255)
    for box in ellipses:
        d.ellipse(box, outline=255, width=20)
    a = np.asarray(im, dtype=float) / 255
    return np.round(a.reshape(140, 2, 140, 2).mean(axis=(1, 3)), 3)


def arc(cx, cy, rx, ry, a0=0.0, a1=2 * np.pi, n=40):
    t = np.linspace(a0, a1, n)
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


NOT_DIGITS = {
    "house": pad([[(60, 130), (60, 240), (220, 240), (220, 130), (60, 130)],
                  [(45, 135), (140, 45), (235, 135)]]),
    "box": pad([[(50, 50), (50, 230), (230, 230), (230, 50), (50, 50)]]),
    "star": pad([[(140, 30), (175, 240), (40, 100), (240, 100), (105, 240), (140, 30)]]),
    "smiley": pad([arc(140, 140, 100, 100), [(105, 105), (106, 106)], [(175, 105), (176, 106)],
                   arc(140, 150, 50, 50, 0.3, np.pi - 0.3, 20)]),
}
DIGITS = {
    1: pad([[(150, 40), (140, 240)]]),
    7: pad([[(60, 50), (220, 50), (120, 240)]]),
    0: pad([arc(140, 140, 70, 100, n=50)]),
    4: pad([[(170, 240), (170, 40), (60, 170), (230, 170)]]),
    8: pad([arc(140, 85, 50, 50), arc(140, 185, 55, 55)]),
}


@pytest.fixture(scope="module")
def space(data_dir):
    return DigitSpace.from_mnist(data_dir)  # the training images, as serve() reads them


def test_real_digits_are_rarely_called_unlike_digits(space, data_dir):
    """The threshold is the 98th percentile of held-out training digits: about 2 % of the
    (never seen) test digits are beyond it."""
    from fastmlp.datasets import read_idx

    name = "t10k-images-idx3-ubyte"
    path = next(p for p in (data_dir / "mnist" / name, data_dir / "mnist" / f"{name}.gz")
                if p.is_file())
    X_test = read_idx(path).reshape(-1, 784) / 255.0
    flagged = float(np.mean(space.distance(X_test) > space.threshold))
    assert 0.005 < flagged < 0.04, flagged


def test_no_mnist_on_disk_means_no_check(tmp_path):
    assert DigitSpace.from_mnist(tmp_path) is None  # and nothing is downloaded
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(NOT_DIGITS))
def test_drawings_that_are_not_digits_are_called_so(space, name):
    assert space.is_unlike(to_mnist(NOT_DIGITS[name])), space.distance(to_mnist(NOT_DIGITS[name]))


@pytest.mark.parametrize("digit", sorted(DIGITS))
def test_drawn_digits_are_not(space, digit):
    assert not space.is_unlike(to_mnist(DIGITS[digit]))


class Sure:
    layer_sizes = [784, 16, 10]

    def __init__(self, top=0.82):
        self.top = top

    def predict_proba(self, X):
        p = np.full((X.shape[0], 10), (1 - self.top) / 9)
        p[:, 0] = self.top
        return p


def answer(model, pixels, **kwargs):
    import http.client
    import json

    server = make_server(model, port=0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        conn.request("POST", "/api/predict", json.dumps({"pixels": pixels.tolist()}),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        return json.loads(resp.read())
    finally:
        server.shutdown()
        server.server_close()


def test_a_house_read_as_a_confident_0_gets_the_hint(space):
    """The model says "0, 82 %"; the answer says the drawing is unlike the digits."""
    data = answer(Sure(), NOT_DIGITS["house"], digit_space=space)
    assert data["label"] == 0 and "unlike the handwritten digits" in data["hint"]
    assert answer(Sure(), DIGITS[7], digit_space=space)["hint"] is None


def test_an_unsure_network_gets_the_hint_without_mnist():
    data = answer(Sure(top=UNSURE_BELOW - 0.1), DIGITS[7])
    assert "unsure" in data["hint"]
    assert answer(Sure(top=UNSURE_BELOW + 0.1), NOT_DIGITS["house"])["hint"] is None


@pytest.mark.parametrize("history, checks", [({"run": {"dataset": "mnist"}}, True),
                                             ({}, True),
                                             ({"run": {"dataset": "fashion-mnist"}}, False)])
def test_serve_checks_drawings_against_mnist_for_mnist_models(monkeypatch, history, checks):
    from fastmlp.web import server as module

    def stop(self, *args, **kwargs):
        raise KeyboardInterrupt

    made = object()
    monkeypatch.setattr(DigitSpace, "from_mnist", classmethod(lambda cls, data_dir=None: made))
    monkeypatch.setattr(module.DigitServer, "serve_forever", stop)
    built = serve(model=Sure(), port=0, history=history)
    assert built.digit_space is (made if checks else None)
