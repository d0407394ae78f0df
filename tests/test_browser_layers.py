"""The served draw page (``fastmlp serve``) with networks that have BatchNorm, AvgPool2D and
Dropout layers, in headless Chromium: it names them by their layer lists and draws the
conv -> BN -> ReLU block's feature maps. Untrained networks: nothing to wait for.

Its own module: Playwright's sync API runs one instance at a time, and tests/test_browser.py
holds one open for its whole module. Needs what tests/test_browser.py needs.
"""

import threading

import numpy as np
import pytest

from fastmlp.web.server import make_server
from _browser import CHROMIUM_ARGS, chromium_path
from test_browser import cells, draw, drawn_maps, read_prediction, seen_image

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install playwright"
)


def check_bn_block_maps(page, net):
    """The first block's 4 maps, drawn: the BatchNorm's output (after BN and ReLU)."""
    assert page.locator("#maps-box").is_visible()
    note = page.inner_text("#maps-note")
    assert "4 maps of 28 × 28" in note
    assert "Conv2D(4, 5, padding=2), BatchNorm(), relu" in note
    gray = cells(drawn_maps(page), 4, 28, 28)[..., 0]
    image = seen_image(page).reshape(1, 784).astype(np.float32)
    maps = net.forward(image)[1].reshape(4, 28, 28)  # the BatchNorm's row
    low = np.minimum(maps.min(axis=(1, 2)), 0)[:, None, None]
    high = np.maximum(maps.max(axis=(1, 2)), 0)[:, None, None]
    want = 255 * (maps - low) / np.where(high > low, high - low, 1)
    diff = np.abs(gray - want)
    assert (gray > 0).sum() > 100 and diff.mean() < 2 and np.quantile(diff, 0.99) < 12, \
        diff.max()


def test_new_layer_kinds_are_named_and_the_bn_block_maps_drawn():
    """The page names a CNN with BatchNorm, AvgPool2D and Dropout layers and an MLP with
    BatchNorm and Dropout by their layer lists, and draws the conv -> BN -> ReLU block's
    maps (the BatchNorm's output) for the CNN."""
    browser_path = chromium_path()
    if browser_path is None:
        pytest.skip("no Chromium binary: set FASTMLP_CHROMIUM or install one (apt-get install "
                    "chromium)")
    from fastmlp import AvgPool2D, BatchNorm, Conv2D, Dropout, MaxPool2D
    from fastmlp.network import Network

    cnn = Network([(1, 28, 28), Conv2D(4, 5, padding=2), BatchNorm(), MaxPool2D(2),
                   Dropout(0.25), AvgPool2D(2), 10], seed=0)
    bn = cnn.batch_norms[0]
    bn.running_mean, bn.running_var = np.full(4, 0.05), np.full(4, 0.02)
    mlp = Network([784, 32, BatchNorm(), Dropout(0.2), 10], seed=0)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            for net, kind in ((cnn, "A convolutional network"), (mlp, "An MLP")):
                srv = make_server(net, host="127.0.0.1", port=0)
                thread = threading.Thread(target=srv.serve_forever, daemon=True)
                thread.start()
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                problems = []
                page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
                try:
                    page.goto(srv.url, wait_until="load")
                    page.wait_for_function(
                        "() => document.getElementById('model-info').textContent !== ''")
                    assert page.inner_text("#net-kind") == kind
                    architecture = "[" + ", ".join(map(repr, net.layers)) + "]"
                    assert architecture in page.inner_text("#model-info")
                    draw(page, [[(14, 5), (13, 23)], [(9, 8), (19, 8)]])
                    read_prediction(page)
                    if net is mlp:
                        assert page.locator("#maps-box").is_hidden()
                    else:
                        check_bn_block_maps(page, net)
                finally:
                    page.close()
                    srv.shutdown()
                    srv.server_close()
                    thread.join(5)
                assert not problems, problems
        finally:
            browser.close()
