"""The draw-a-digit page in a real headless Chromium, driven by Playwright.

Real MNIST test digits are skeletonized into pen strokes, drawn on ``#pad`` with the mouse
(the page listens to Pointer Events), and the digit the page shows in ``#prediction`` is
compared with the label. Every test runs twice: with a 784-128-10 MLP and with a small
CNN, ``[(1, 28, 28), Conv2D(16, 5, padding=2), MaxPool2D(2), 10]``, whose first conv layer's
feature maps the page must draw for each digit. Both are trained in the test (or loaded from
``$FASTMLP_BROWSER_MODEL`` / ``$FASTMLP_BROWSER_CNN_MODEL``). ``$FASTMLP_SCREENSHOT`` names
where the MLP page's screenshot goes, the CNN page's beside it with ``-cnn`` added to the name
(default: the test's tmp_path).

Needs ``pip install playwright`` and a Chromium binary: ``$FASTMLP_CHROMIUM``, or
``chromium`` / ``chromium-browser`` / ``google-chrome`` on PATH (Debian: ``apt-get install
chromium``). ``playwright install`` is not needed. Skips with the reason when either is missing.
"""

import gzip
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from fastmlp.images import resize
from fastmlp.web.server import make_server
from _browser import CHROMIUM_ARGS, chromium_path

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install playwright"
)

UPSCALE = 4  # skeletonize at 112 x 112 for smooth strokes


def read_idx(path):
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def idx_file(folder, name):
    for suffix in ("", ".gz"):
        if (folder / (name + suffix)).is_file():
            return folder / (name + suffix)
    raise FileNotFoundError(name)


# ----------------------------------------------------------------------------- strokes


def zhang_suen(mask):
    """Thin a boolean image to a one-pixel-wide skeleton (Zhang & Suen, 1984), vectorized."""
    img = np.pad(mask.astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = img
            # neighbours P2..P9 clockwise from north
            n = [p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:],
                 p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2], p[:-2, :-2]]
            b = sum(x.astype(int) for x in n)
            a = sum(((n[i] == 0) & (n[(i + 1) % 8] == 1)).astype(int) for i in range(8))
            p2, p4, p6, p8 = n[0], n[2], n[4], n[6]
            if step == 0:
                c = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                c = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            kill = (p[1:-1, 1:-1] == 1) & (b >= 2) & (b <= 6) & (a == 1) & c
            if kill.any():
                img[1:-1, 1:-1][kill] = 0
                changed = True
        if not changed:
            return img[1:-1, 1:-1].astype(bool)


NEIGHBOURS = [(-1, 0), (0, 1), (1, 0), (0, -1), (-1, 1), (1, 1), (1, -1), (-1, -1)]


def trace(skeleton):
    """Skeleton pixels -> polylines [(row, col), ...], starting at stroke ends."""
    remaining = set(zip(*np.nonzero(skeleton)))

    def free_neighbours(p):
        return [(p[0] + dr, p[1] + dc) for dr, dc in NEIGHBOURS if (p[0] + dr, p[1] + dc) in remaining]

    strokes = []
    while remaining:
        ends = sorted(p for p in remaining if len(free_neighbours(p)) == 1)
        cur = ends[0] if ends else min(remaining)
        remaining.discard(cur)
        path, heading = [cur], None
        while True:
            options = free_neighbours(cur)
            if not options:
                break
            if heading is None:
                nxt = options[0]  # 4-neighbours come first in NEIGHBOURS
            else:  # keep going the same way where the skeleton branches
                nxt = max(options, key=lambda q: (q[0] - cur[0]) * heading[0] + (q[1] - cur[1]) * heading[1])
            heading = (nxt[0] - cur[0], nxt[1] - cur[1])
            remaining.discard(nxt)
            path.append(nxt)
            cur = nxt
        if len(path) >= 3:  # drop specks
            strokes.append(path)
    return strokes


def digit_strokes(digit):
    """Pen strokes for an MNIST digit, in 28x28 pixel coordinates (x, y)."""
    big = resize(digit / 255.0, (28 * UPSCALE, 28 * UPSCALE))
    skeleton = zhang_suen(big > 0.45)
    strokes = []
    for path in trace(skeleton):
        pts = path[::3] + ([path[-1]] if (len(path) - 1) % 3 else [])
        strokes.append([((c + 0.5) / UPSCALE, (r + 0.5) / UPSCALE) for r, c in pts])
    return strokes


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def browser_path():
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium binary: set FASTMLP_CHROMIUM or install one (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def mnist(data_dir):
    folder = data_dir / "mnist"
    return {
        "train": (read_idx(idx_file(folder, "train-images-idx3-ubyte")),
                  read_idx(idx_file(folder, "train-labels-idx1-ubyte"))),
        "test": (read_idx(idx_file(folder, "t10k-images-idx3-ubyte")),
                 read_idx(idx_file(folder, "t10k-labels-idx1-ubyte"))),
    }


def train_model(mnist, kind="mlp"):
    """784-128-10 (4 epochs) or conv16-pool-10 (3 epochs) on 20k MNIST images: ~97 % on the
    test set, in about ten seconds each once compiled."""
    from fastmlp import Conv2D, MaxPool2D
    from fastmlp.network import Network

    X, y = mnist["train"]
    Xt, yt = mnist["test"]
    X = X[:20000].reshape(-1, 784).astype(np.float32) / 255
    Xv = Xt[-2000:].reshape(-1, 784).astype(np.float32) / 255
    if kind == "cnn":
        net, epochs = Network([(1, 28, 28), Conv2D(16, 5, padding=2), MaxPool2D(2), 10],
                              seed=0), 3
    else:
        net, epochs = Network([784, 128, 10], seed=0), 4
    net.fit(X, y[:20000].astype(np.int64), epochs=epochs, batch_size=32, learning_rate=0.1,
            validation_data=(Xv, yt[-2000:].astype(np.int64)), verbose=False)
    return net


MODEL_ENV = {"mlp": "FASTMLP_BROWSER_MODEL", "cnn": "FASTMLP_BROWSER_CNN_MODEL"}


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def model(request, mnist):
    path = os.environ.get(MODEL_ENV[request.param])
    if path:
        from fastmlp.network import Network

        net = Network.load(path)
        assert net.is_mlp == (request.param == "mlp"), f"${MODEL_ENV[request.param]}: {path}"
        return net
    return train_model(mnist, request.param)


@pytest.fixture(scope="module")
def server(model):
    srv = make_server(model, host="127.0.0.1", port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def page(browser_path, server, tmp_path_factory):
    with playwright_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=browser_path,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1100, "height": 900},
            offline=False,
        )
        try:
            pg = context.pages[0] if context.pages else context.new_page()
            pg.problems = []
            pg.on("pageerror", lambda exc: pg.problems.append(f"page error: {exc}"))
            pg.on("console", lambda m: m.type == "error" and pg.problems.append(f"console: {m.text}"))
            pg.on("requestfailed", lambda r: pg.problems.append(f"request failed: {r.url}"))
            pg.goto(server.url, wait_until="load")
            yield pg
        finally:
            context.close()


# ----------------------------------------------------------------------------- tests


def draw(page, strokes):
    """Draw strokes given in 28x28 coordinates onto #pad with the mouse."""
    box = page.evaluate(
        """() => { const p = document.getElementById('pad'), r = p.getBoundingClientRect();
                   return {x: r.left + p.clientLeft, y: r.top + p.clientTop,
                           w: p.clientWidth, h: p.clientHeight}; }"""
    )
    sx, sy = box["w"] / 28, box["h"] / 28
    for stroke in strokes:
        x0, y0 = stroke[0]
        page.mouse.move(box["x"] + x0 * sx, box["y"] + y0 * sy)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * sx, box["y"] + y * sy)
        page.mouse.up()


def read_prediction(page):
    page.wait_for_function(
        "() => document.getElementById('prediction').dataset.status === 'ready'", timeout=10_000
    )
    return page.inner_text("#prediction").strip()


def test_page_loads_with_curves(page, model):
    for element_id in ("pad", "clear", "prediction", "probs", "seen", "curves", "maps"):
        assert page.locator(f"#{element_id}").count() == 1
    page.wait_for_function("() => document.getElementById('model-info').textContent !== ''")
    info = page.inner_text("#model-info")
    if model.is_mlp:
        assert "784–128–10" in info and page.inner_text("#net-kind") == "An MLP"
    else:  # the layer list as written in Python
        assert "[(1, 28, 28), Conv2D(16, 5, padding=2), MaxPool2D(2), 10]" in info
        assert "convolutional" in page.inner_text("#net-kind")
    assert page.locator("#maps-box").is_hidden()  # no maps before the first digit
    assert page.locator("#probs .prob").count() == 10
    page.wait_for_function("() => document.getElementById('curves-note').textContent.includes('epoch')")
    inked = page.evaluate(
        """() => { const c = document.getElementById('curves');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"""
    )
    assert inked > 2000  # axes, labels and four curves were drawn
    assert page.evaluate("document.getElementById('prediction').dataset.status") == "empty"


def seen_image(page):
    """The 28x28 image the page drew in #seen, as floats in [0, 1]."""
    data = page.evaluate(
        """() => Array.from(document.getElementById('seen').getContext('2d')
                            .getImageData(0, 0, 28, 28).data)"""
    )
    return np.array(data, dtype=np.float64).reshape(28, 28, 4)[..., 0] / 255


def drawn_maps(page):
    """#maps as drawn: its size, how many maps it shows, and its RGBA pixels."""
    return page.evaluate(
        """() => { const c = document.getElementById('maps');
                   return {w: c.width, h: c.height, n: Number(c.dataset.maps || 0),
                           px: Array.from(c.getContext('2d').getImageData(0, 0, c.width,
                                                                          c.height).data)}; }"""
    )


def cells(got, n, h, w, gap=2):
    """Cut the canvas into the page's grid: n <= 4 in one row, <= 16 four a row, else 8."""
    cols = n if n <= 4 else 4 if n <= 16 else 8
    px = np.array(got["px"], dtype=np.int64).reshape(got["h"], got["w"], 4)
    out = []
    for k in range(n):
        y, x = (k // cols) * (h + gap), (k % cols) * (w + gap)
        out.append(px[y:y + h, x:x + w])
    return np.stack(out)


def expected_maps(model, image):
    """The first conv layer's maps for ``image``, each scaled to [0, 255] like the server does."""
    # 5x5 kernels with padding 2 keep 28 x 28
    maps = model.forward(image.reshape(1, 784).astype(np.float32))[0].reshape(-1, 28, 28)
    low = np.minimum(maps.min(axis=(1, 2)), 0)[:, None, None]
    high = np.maximum(maps.max(axis=(1, 2)), 0)[:, None, None]
    return 255 * (maps - low) / np.where(high > low, high - low, 1)


def check_maps(page, model):
    """A CNN's answer comes with its first conv layer's maps, drawn as a grid of cells that
    match the maps of the image in #seen; an MLP's page shows none."""
    if model.is_mlp:
        assert page.locator("#maps-box").is_hidden()
        return
    assert page.locator("#maps-box").is_visible()
    got = drawn_maps(page)
    n = got["n"]
    assert n == 16 and (got["w"], got["h"]) == (4 * 28 + 3 * 2, 4 * 28 + 3 * 2)
    drawn = cells(got, n, 28, 28)
    assert (drawn[..., 3] == 255).all()  # every cell is painted, opaque
    gray = drawn[..., 0]
    assert (gray == drawn[..., 1]).all() and (gray == drawn[..., 2]).all()
    assert (gray > 0).sum() > 200  # the digit lit up some maps
    # #seen holds the network's input to within 1/255 a pixel: the maps follow from it
    want = expected_maps(model, seen_image(page))
    diff = np.abs(gray - want)
    assert diff.mean() < 2 and np.quantile(diff, 0.99) < 12, (diff.mean(), diff.max())
    assert "16 maps" in page.inner_text("#maps-note")


def screenshot_path(model, tmp_path):
    kind = "mlp" if model.is_mlp else "cnn"
    env = os.environ.get("FASTMLP_SCREENSHOT")
    if not env:
        return tmp_path / f"screenshot-{kind}.png"
    shot = Path(env)
    return shot if kind == "mlp" else shot.with_name(shot.stem + "-cnn" + shot.suffix)


def test_drawn_mnist_digits_are_read(page, mnist, model, tmp_path):
    images, labels = mnist["test"]
    picks = [int(np.flatnonzero(labels == d)[0]) for d in range(10)]  # the first of each class
    results = []
    for i in picks:
        page.click("#clear")
        assert page.inner_text("#prediction").strip() == "–"
        draw(page, digit_strokes(images[i]))
        results.append((int(labels[i]), read_prediction(page)))
        # the page's bars and its 28x28 image follow the answer
        assert page.locator("#probs .prob.top").count() == 1
        assert page.locator("#probs .prob.top").get_attribute("data-digit") == results[-1][1]
        seen_ink = page.evaluate(
            """() => { const d = document.getElementById('seen').getContext('2d')
                                 .getImageData(0, 0, 28, 28).data;
                       let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s; }"""
        )
        assert seen_ink > 0
        check_maps(page, model)
    right = sum(str(label) == shown for label, shown in results)
    shot = screenshot_path(model, tmp_path)
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nbrowser read {right}/10 drawn digits right: {results}; screenshot: {shot}")
    assert right >= 7, f"only {right}/10 right (label, shown): {results}"
    assert not page.problems, page.problems


def test_clear_resets(page, model):
    draw(page, [[(8, 8), (20, 20)]])
    read_prediction(page)
    check_maps(page, model)
    page.click("#clear")
    if not model.is_mlp:  # the grid stays, every cell black
        got = drawn_maps(page)
        assert got["n"] == 0
        assert not cells(got, 16, 28, 28)[..., :3].any()
    assert page.inner_text("#prediction").strip() == "–"
    assert page.evaluate("document.getElementById('prediction').dataset.status") == "empty"
    blank = page.evaluate(
        """() => { const c = document.getElementById('pad');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   return d.every(v => v === 0); }"""
    )
    assert blank


def test_touch_strokes_draw(page):
    """A finger on a touch screen (real touch input through the DevTools protocol)."""
    page.click("#clear")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 1})
    box = page.evaluate(
        """() => { const r = document.getElementById('pad').getBoundingClientRect();
                   return {x: r.left, y: r.top}; }"""
    )
    page.evaluate(
        """() => { window.__types = new Set();
                   document.getElementById('pad').addEventListener('pointerdown',
                       e => window.__types.add(e.pointerType)); }"""
    )
    points = [(140, 50 + 10 * k) for k in range(19)]  # a vertical "1"
    for kind, (x, y) in [("touchStart", points[0])] + [("touchMove", p) for p in points[1:]]:
        cdp.send("Input.dispatchTouchEvent",
                 {"type": kind, "touchPoints": [{"x": box["x"] + x, "y": box["y"] + y}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    assert read_prediction(page) == "1"
    assert page.evaluate("[...window.__types]") == ["touch"]
    cdp.send("Emulation.setTouchEmulationEnabled", {"enabled": False})
    cdp.detach()
