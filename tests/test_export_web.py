"""The static site of ``fastmlp export MODEL --web DIR`` in a real headless Chromium.

The folder is served by Python's ``http.server`` on 127.0.0.1; digits are drawn with the
mouse; the page's ``#prediction`` must then carry ``data-label`` and ``data-probabilities``
equal to ``Network.predict_proba`` on the 28x28 image the page computed (``data-input``), and
that image must equal :func:`fastmlp.images.to_mnist` of the page's own canvas pixels. Every
request the page makes must go to that server. Runs for an MLP, a small CNN and a CNN with
BatchNorm, AvgPool2D and Dropout layers, trained here on 5,000 MNIST images (or loaded from
``$FASTMLP_EXPORT_MODEL`` / ``$FASTMLP_EXPORT_CNN_MODEL`` / ``$FASTMLP_EXPORT_BN_MODEL``), and
prints the page weight and the time to the first prediction.

``FASTMLP_SCREENSHOTS=1`` saves the MLP page to docs/screenshot-export.png.

Needs playwright and a Chromium binary (``$FASTMLP_CHROMIUM``, or ``chromium`` on PATH;
Debian: ``apt-get install chromium``): without them these tests fail saying which is missing.
"""

import functools
import json
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fastmlp import AvgPool2D, BatchNorm, Conv2D, Dropout, MaxPool2D, export
from fastmlp.images import to_mnist
from fastmlp.network import Network
from _browser import CHROMIUM_ARGS, chromium_path
from test_export import BN_CNN, set_batch_norms

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "screenshot-export.png"
MODEL_ENV = {"mlp": "FASTMLP_EXPORT_MODEL", "cnn": "FASTMLP_EXPORT_CNN_MODEL",
             "cnn-bn": "FASTMLP_EXPORT_BN_MODEL"}
PAGE_FILES = {"index.html", "app.js", "style.css", "model.json", "model.bin"}

# Hand-drawn digits, strokes of (x, y) points in 28x28 pad coordinates.
DIGITS = {
    "1": [[(15, 5), (14, 23)]],
    "7": [[(8, 6), (20, 6), (16, 13), (12, 23)]],
    "3": [[(9, 7), (13, 5), (18, 6), (19, 10), (14, 13), (19, 16), (19, 21), (13, 23),
           (8, 21)]],
    "0": [[(14, 5), (9, 8), (8, 14), (9, 20), (14, 23), (19, 20), (20, 14), (19, 8),
           (14, 5)]],
    "4": [[(16, 4), (8, 16), (21, 16)], [(17, 10), (17, 24)]],
}


@pytest.fixture(scope="module")
def playwright_api():
    try:
        import playwright.sync_api
    except ImportError:
        pytest.fail("playwright is not installed: pip install playwright (the test extra has it)")
    return playwright.sync_api


@pytest.fixture(scope="module")
def browser_path():
    path = chromium_path()
    if path is None:
        pytest.fail("no Chromium binary: set FASTMLP_CHROMIUM or install one "
                    "(apt-get install chromium)")
    return path


def train(kind, data_dir):
    from fastmlp.datasets import load_mnist

    X, y = load_mnist(data_dir, download=False, progress=False)[:2]
    if kind == "cnn":
        net = Network([(1, 28, 28), Conv2D(8, 5, padding=2), MaxPool2D(2),
                       Conv2D(16, 3, stride=2, padding=1), MaxPool2D(2), 32, 10], seed=0)
    elif kind == "cnn-bn":
        net = Network(BN_CNN, seed=0)
    else:
        net = Network([784, 64, 10], seed=0)
    net.fit(X[:5000], y[:5000], epochs=3, batch_size=32, learning_rate=0.05, verbose=False)
    return net


@pytest.fixture(scope="module", params=list(MODEL_ENV))
def model(request, data_dir):
    path = os.environ.get(MODEL_ENV[request.param])
    if path:
        net = Network.load(path)
        assert net.is_mlp == (request.param == "mlp"), f"${MODEL_ENV[request.param]}: {path}"
        return net
    return train(request.param, data_dir)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(model, tmp_path_factory):
    """``(url, folder, sizes)``: the exported folder, served on 127.0.0.1."""
    folder = tmp_path_factory.mktemp("site")
    sizes = export.to_web(model, folder)
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", folder, sizes
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def context(playwright_api, browser_path, tmp_path_factory):
    with playwright_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=browser_path,
            headless=True, args=CHROMIUM_ARGS, viewport={"width": 1100, "height": 720})
        try:
            yield ctx
        finally:
            ctx.close()


def open_page(context, url):
    """A fresh page at ``url`` that records every request and problem, model loaded."""
    page = context.new_page()
    page.requests, page.problems = [], []
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("pageerror", lambda exc: page.problems.append(f"page error: {exc}"))
    page.on("console", lambda m: m.type in ("error", "warning")
            and page.problems.append(f"console {m.type}: {m.text}"))
    page.on("requestfailed", lambda r: page.problems.append(f"request failed: {r.url}"))
    page.goto(url, wait_until="load")
    page.wait_for_function("() => window.fastmlpExport && window.fastmlpExport.model",
                           timeout=20_000)
    return page


def draw(page, strokes):
    """Draw strokes given in 28x28 coordinates onto #pad with the mouse."""
    box = page.evaluate(
        """() => { const p = document.getElementById('pad'), r = p.getBoundingClientRect();
                   return {x: r.left + p.clientLeft, y: r.top + p.clientTop,
                           w: p.clientWidth, h: p.clientHeight}; }""")
    sx, sy = box["w"] / 28, box["h"] / 28
    for stroke in strokes:
        x0, y0 = stroke[0]
        page.mouse.move(box["x"] + x0 * sx, box["y"] + y0 * sy)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * sx, box["y"] + y * sy, steps=6)
        page.mouse.up()


def read_prediction(page):
    """What the page shows after drawing: its attributes and the pixels it started from,
    read in one go (one prediction's values)."""
    page.wait_for_function(
        "() => document.getElementById('prediction').dataset.status === 'ready'",
        timeout=10_000)
    got = page.evaluate(
        """() => { const p = document.getElementById('prediction'), api = window.fastmlpExport;
                   return {label: p.dataset.label, text: p.textContent,
                           probabilities: p.dataset.probabilities, input: p.dataset.input,
                           pixels: Array.from(api.last.pixels), size: api.last.size,
                           timings: api.timings}; }""")
    got["probabilities"] = np.array(json.loads(got["probabilities"]))
    got["input"] = np.array(json.loads(got["input"]))
    got["pixels"] = np.array(got["pixels"]).reshape(got["size"], got["size"])
    return got


def test_page_predicts_like_python(context, site, model, tmp_path):
    url, folder, sizes = site
    page = open_page(context, url)
    kind = "an MLP" if model.is_mlp else "a convolutional network"
    assert page.inner_text("#net-kind").lower() == kind.lower()
    assert page.evaluate("document.getElementById('prediction').dataset.status") == "empty"
    assert page.locator("#probs .prob").count() == 10
    worst_input = worst_proba = 0.0
    results, times = [], []
    for digit, strokes in DIGITS.items():
        page.click("#clear")
        assert page.get_attribute("#prediction", "data-label") is None
        draw(page, strokes)
        got = read_prediction(page)
        # the page's preprocessing is fastmlp.images.to_mnist, to rounding
        image = to_mnist(got["pixels"])
        worst_input = max(worst_input, float(np.abs(got["input"] - image.ravel()).max()))
        # its forward pass is predict_proba, on the input it computed and end to end
        want = model.predict_proba(got["input"].astype(np.float32).reshape(1, 784))[0]
        want_end = model.predict_proba(image.reshape(1, 784))[0]
        worst_proba = max(worst_proba, float(np.abs(got["probabilities"] - want).max()),
                          float(np.abs(got["probabilities"] - want_end).max()))
        assert got["label"] == got["text"] == str(int(np.argmax(want)))
        assert page.locator("#probs .prob.top").get_attribute("data-digit") == got["label"]
        results.append((digit, got["label"]))
        times.append(got["timings"]["lastPredictionMs"])
    print(f"\n{model.layers}: max |JS - Python| input {worst_input:.3g}, probabilities "
          f"{worst_proba:.3g}; drawn -> read: {results}; last prediction of each digit "
          f"{min(times):.1f}-{max(times):.1f} ms")
    assert worst_input <= 1e-4
    assert worst_proba <= 1e-4
    if os.environ.get("FASTMLP_SCREENSHOTS") and model.is_mlp:
        page.click("#clear")
        draw(page, DIGITS["3"])
        read_prediction(page)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        print(f"screenshot: {SCREENSHOT}")
    assert not page.problems, page.problems
    page.close()


def test_nothing_from_other_hosts_and_timings(context, site, model):
    """A fresh page: every request goes to the folder's server, and each file is read once;
    the page weight and the time to the first prediction are measured."""
    url, folder, sizes = site
    page = open_page(context, url)
    draw(page, DIGITS["7"])
    got = read_prediction(page)
    requested = [u for u in page.requests if not u.startswith("data:")]
    assert all(u.startswith(url) for u in requested), requested
    assert sorted(u[len(url):] or "index.html" for u in requested) == sorted(PAGE_FILES)
    weight = sum((folder / name).stat().st_size for name in PAGE_FILES)
    assert weight == sum(sizes.values())
    t = got["timings"]
    print(f"\n{model.layers}: page weight {weight:,} bytes (model.bin {sizes['model.bin']:,}); "
          f"model ready {t['modelReadyMs']:.0f} ms after navigation start (load "
          f"{t['modelLoadMs']:.1f} ms); first prediction {t['firstPredictionMs']:.1f} ms")
    assert 0 < t["firstPredictionMs"] < 2000
    assert not page.problems, page.problems
    page.close()


def test_clear_escape_and_touch(context, site):
    url, _, _ = site
    page = open_page(context, url)
    draw(page, DIGITS["1"])
    read_prediction(page)
    page.keyboard.press("Escape")
    status = page.evaluate("""() => { const p = document.getElementById('prediction');
                                      return [p.dataset.status, p.dataset.label,
                                              p.dataset.probabilities, p.textContent]; }""")
    assert status == ["empty", None, None, "–"]
    blank = page.evaluate("""() => { const c = document.getElementById('pad');
                                     return c.getContext('2d').getImageData(0, 0, c.width,
                                                                            c.height).data
                                              .every(v => v === 0); }""")
    assert blank
    # a finger on a touch screen (real touch input through the DevTools protocol)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 1})
    box = page.evaluate("""() => { const r = document.getElementById('pad')
                                                .getBoundingClientRect();
                                   return {x: r.left, y: r.top}; }""")
    points = [(140, 50 + 10 * k) for k in range(19)]
    for kind, (x, y) in [("touchStart", points[0])] + [("touchMove", p) for p in points[1:]]:
        cdp.send("Input.dispatchTouchEvent",
                 {"type": kind, "touchPoints": [{"x": box["x"] + x, "y": box["y"] + y}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    assert read_prediction(page)["label"] in "0123456789"
    cdp.detach()
    assert not page.problems, page.problems
    page.close()


def test_page_from_a_file_url_says_to_serve_it(context, site):
    """Opened from disk the model cannot be fetched: the page says how to serve it."""
    _, folder, _ = site
    page = context.new_page()
    page.goto((folder / "index.html").as_uri(), wait_until="load")
    page.wait_for_function(
        "() => document.getElementById('prediction').dataset.status === 'error'",
        timeout=10_000)
    assert "http.server" in page.inner_text("#status")
    page.close()


# ------------------------------------------------------------------ the JS functions alone

RANDOM_NETS = {  # every layer kind and activation the page's forward pass knows
    "cnn-all-activations": ([(1, 28, 28), Conv2D(3, (3, 2), stride=2, padding=1),
                             MaxPool2D(3, stride=2), Conv2D(4, 2), 6, 5],
                            ["tanh", "sigmoid", "exp", "identity"], "float32"),
    "mlp-sigmoid-tanh": ([784, 16, 8, 10], ["sigmoid", "tanh", "softmax"], "float32"),
    "mlp-float64": ([784, 12, 10], ["relu", "softmax"], "float64"),
    # conv -> BN -> activation, both poolings, BatchNorm after dense layers, dropout anywhere
    "cnn-batchnorm-avgpool-dropout": ([(1, 28, 28), Conv2D(3, 3, stride=2, padding=1),
                                       BatchNorm(), AvgPool2D(3, stride=2), Dropout(0.2),
                                       Conv2D(4, 2), BatchNorm(eps=1e-3), MaxPool2D(2), 6,
                                       BatchNorm(), Dropout(0.5), 5],
                                      ["tanh", "relu", "sigmoid", "identity"], "float32"),
    "mlp-batchnorm-float64": ([784, 16, BatchNorm(), Dropout(0.3), 8, BatchNorm(eps=0.1), 10],
                              ["relu", "tanh", "softmax"], "float64"),
}


@pytest.fixture(scope="module", params=list(RANDOM_NETS))
def random_site(request, tmp_path_factory):
    spec, activations, dtype = RANDOM_NETS[request.param]
    net = Network(spec, activations=activations, dtype=dtype, seed=4, backend="numpy",
                  cost="cross_entropy" if activations[-1] == "softmax" else "mse")
    rng = np.random.default_rng(5)
    net.biases = [rng.normal(0, 0.3, b.shape) for b in net.biases]
    set_batch_norms(net, rng.random((64, 784)) * (rng.random((64, 784)) < 0.3), rng)
    folder = tmp_path_factory.mktemp("random-site")
    export.to_web(net, folder)
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield net, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_js_forward_matches_predict_proba(context, random_site):
    net, url = random_site
    page = open_page(context, url)
    rng = np.random.default_rng(6)
    X = rng.random((4, 784)) * (rng.random((4, 784)) < 0.3)  # mostly zeros, like MNIST
    X = X.astype(net.dtype)
    got = np.array(page.evaluate(
        "(xs) => xs.map((x) => Array.from(window.fastmlpExport.forward(x)))", X.tolist()))
    want = net.predict_proba(X)
    assert got.shape == want.shape
    print(f"\n{net.layers} {net.dtype}: max |JS - predict_proba| "
          f"{float(np.abs(got - want).max()):.3g}")
    assert want.std(axis=0).max() > 1e-3  # the rows' outputs differ: every layer matters
    np.testing.assert_allclose(got, want, rtol=1e-5 if net.dtype == np.float32 else 1e-12,
                               atol=1e-6 if net.dtype == np.float32 else 1e-12)
    assert page.locator("#probs .prob").count() == net.n_outputs
    assert not page.problems, page.problems
    page.close()


def synthetic_images():
    """Pictures that take every branch of to_mnist: dark ink on light paper (inverted),
    digits smaller than the 20 px box (enlarged), wide and tall ones, odd sizes, grey
    backgrounds, sizes that round half to even, a 2-row image (its border is all of it)."""
    rng = np.random.default_rng(7)
    images = []
    for h, w in [(140, 140), (28, 28), (60, 37), (9, 31), (41, 5), (2, 30), (13, 13)]:
        a = np.zeros((h, w))
        r0, c0 = h // 4, w // 5
        a[r0:max(r0 + 1, 3 * h // 4), c0:max(c0 + 1, w // 2)] = rng.random()
        a[rng.random((h, w)) < 0.05] = 0.7
        images.append(a)
        images.append(1 - 0.8 * a)  # dark on light
    grey = np.full((50, 40), 0.2)
    grey[10:40, 5:7] = 0.9  # 30 x 2: scaled to 20 x 1.33 -> rounds to 1
    images.append(grey)
    half = np.zeros((40, 40))
    half[0:40, 0:5] = 1  # 40 x 5 -> 20 x 2.5 -> Python's round gives 2, not 3
    images.append(half)
    return images


def test_js_to_mnist_matches_python(context, random_site):
    _, url = random_site
    page = open_page(context, url)
    for image in synthetic_images():
        got = page.evaluate(
            "([px, h, w]) => { const r = window.fastmlpExport.toMnist(px, h, w);"
            "                  return r && Array.from(r); }",
            [image.ravel().tolist(), image.shape[0], image.shape[1]])
        want = to_mnist(image)
        assert got is not None, image.shape
        np.testing.assert_allclose(np.array(got).reshape(28, 28), want, atol=1e-6,
                                   err_msg=str(image.shape))
    blank = page.evaluate("() => window.fastmlpExport.toMnist(new Array(100).fill(0.3), 10, 10)")
    assert blank is None  # no ink: to_mnist raises ValueError
    page.close()
