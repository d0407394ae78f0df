"""The documentation says what the code does: every README example runs and prints what the
README shows, docs/api.md is generated from the code as it is, the version is the
changelog's, and the examples leave nothing in the folder they run from.

The README's Python blocks run in order in one namespace, in a temporary folder, on small
data (MNIST's first 600 training and 200 test images; scikit-learn's digits for ``X, y``),
and the Dask cluster is in-process (tests/test_dask.py runs a real one). The web-API block's
commands run in bash (curl) against a test server holding a network of the README's
architecture trained for one epoch. The set-up blocks (``pip install``) are what .ci/run
runs."""

import json
import re
import runpy
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(language):
    return [code for lang, code in BLOCK.findall(README) if lang == language]


@pytest.fixture(scope="module")
def small_mnist(data_dir):
    from fastmlp.datasets import load_mnist

    X_train, y_train, X_test, y_test = load_mnist(data_dir, download=False, progress=False)
    return X_train, y_train, X_test, y_test


def shown_pattern(text):
    """A README output comment as a regex: ``...`` stands for anything."""
    return re.compile(".+?".join(re.escape(part) for part in text.strip().split("...")))


# --- Python blocks -------------------------------------------------------------------------


def test_readme_python_examples_run_and_print_what_they_show(small_mnist, tmp_path,
                                                             monkeypatch, capsys):
    pytest.importorskip("dask.distributed")
    from sklearn.datasets import load_digits

    import fastmlp.datasets

    X_train, y_train, X_test, y_test = small_mnist
    monkeypatch.setattr(fastmlp.datasets, "load_mnist", lambda *a, **k: (
        X_train[:600], y_train[:600], X_test[:200], y_test[:200]))
    monkeypatch.chdir(tmp_path)
    X, y = load_digits(return_X_y=True)
    namespace = {"X": (X[:400] / 16).astype(np.float32), "y": y[:400]}
    code_blocks = blocks("python")
    assert len(code_blocks) >= 4, "README's Python examples were not found"
    in_process = "LocalCluster(n_workers=2, threads_per_worker=1)"
    try:
        for code in code_blocks:
            if in_process in code:
                code = code.replace(in_process, in_process[:-1] + ", processes=False, "
                                    "dashboard_address=None)")
            exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our README
            printed = capsys.readouterr().out.splitlines()
            for line in code.splitlines():
                shown = re.match(r"\s*print\(.*\)\s+#\s*(.+)$", line)
                if shown:
                    pattern = shown_pattern(shown.group(1))
                    assert any(pattern.fullmatch(p) for p in printed), (line, printed)
    finally:
        client = namespace.get("client")
        if client is not None:
            cluster = client.cluster
            client.close()
            cluster.close()
    # what the comments claim
    assert namespace["X_train"].dtype == np.float32 and namespace["X_train"].shape[1] == 784
    assert 0 <= namespace["X_train"].min() and namespace["X_train"].max() <= 1
    assert namespace["history"].val_accuracy, "the Quick start watches a validation split"
    assert namespace["clf"].predict(namespace["X"][:3]).shape == (3,)
    assert namespace["search"].best_params_
    assert "Conv2D(16, 5, padding=2)" in namespace["net"].summary()


def test_quick_start_does_not_validate_on_the_test_set():
    quick = next(code for code in blocks("python") if "load_mnist()" in code)
    start = quick.index(".fit(") + len(".fit(")
    depth, end = 1, start
    while depth:  # to the parenthesis that closes fit(
        depth += {"(": 1, ")": -1}.get(quick[end], 0)
        end += 1
    assert "X_test" not in quick[start:end], quick[start:end]


# --- the web API's curl example -------------------------------------------------------------


def commands_and_outputs(code):
    """``[(command, shown output or None), ...]`` from a bash block: continuation lines
    joined; a comment starting with ``{`` right after a command is what it prints."""
    out, lines = [], code.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        command = line
        while command.endswith("\\"):
            i += 1
            command = command[:-1] + " " + lines[i].lstrip()
        i += 1
        shown = None
        if i < len(lines) and lines[i].startswith("# {"):
            shown = lines[i][2:]
            i += 1
        out.append((command, shown))
    return out


def shown_json(text):
    """The README's JSON with placeholders: ``[...10 numbers...]``, ``[[...28x28
    floats...]]`` become markers that say what shape to expect."""
    text = re.sub(r"\[\[\.\.\.(\d+)x(\d+) floats\.\.\.\]\]", r'"<grid \1 \2>"', text)
    text = re.sub(r"\[\.\.\.(\d+) numbers\.\.\.\]", r'"<numbers \1>"', text)
    return json.loads(text)


def assert_like(actual, shown, where="answer"):
    if isinstance(shown, str) and shown.startswith("<numbers "):
        assert len(actual) == int(shown.split()[1][:-1]), where
        assert all(isinstance(v, (int, float)) for v in actual), where
    elif isinstance(shown, str) and shown.startswith("<grid "):
        rows, cols = (int(v) for v in shown[6:-1].split())
        assert np.asarray(actual).shape == (rows, cols), where
    elif isinstance(shown, dict):
        assert isinstance(actual, dict) and set(actual) == set(shown), (where, actual.keys())
        for key in shown:
            assert_like(actual[key], shown[key], f"{where}.{key}")
    elif isinstance(shown, float):  # a measured number: any number (or null: not measured)
        assert isinstance(actual, (int, float)) and not isinstance(actual, bool), where
    else:  # labels, sizes, strings, null: exactly
        assert actual == shown, (where, actual, shown)


@pytest.fixture(scope="module")
def readme_server(small_mnist):
    from fastmlp import Network
    from fastmlp.web.server import make_server

    X_train, y_train, X_test, y_test = small_mnist
    net = Network([784, 512, 256, 10], seed=0)  # the README's `fastmlp train` architecture
    net.fit(X_train[:10000], y_train[:10000], epochs=1, batch_size=64, learning_rate=0.1,
            verbose=False)
    accuracy = net.evaluate(X_test[:2000], y_test[:2000])["accuracy"]
    server = make_server(net, port=0, history={"run": {"test_accuracy": accuracy}})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_readme_web_api_example_answers_what_it_shows(readme_server):
    if shutil.which("curl") is None or shutil.which("bash") is None:
        pytest.fail("the README's web-API example needs bash and curl")
    code = next(code for code in blocks("bash") if "curl" in code)
    port = readme_server.server_address[1]
    ran = 0
    for command, shown in commands_and_outputs(code):
        if command.startswith("fastmlp serve"):
            continue  # the test's server stands in for it
        command = command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        command = re.sub(r"^python ", f"{sys.executable} ", command)
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, (command, result.stderr)
        assert shown is not None, f"the README shows no output for {command!r}"
        assert_like(json.loads(result.stdout), shown_json(shown), command.split()[-1])
        ran += 1
    assert ran == 2


# --- api.md, versions, paths ---------------------------------------------------------------


def test_api_md_is_generated_from_the_code():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_api
    finally:
        sys.path.remove(str(ROOT / "docs"))
    text = make_api.render()
    assert (ROOT / "docs" / "api.md").read_text(encoding="utf-8") == text, \
        "docs/api.md is out of date: run python docs/make_api.py"
    assert "#### `MLPClassifier.partial_fit(" in text and "#### `MLPRegressor.partial_fit(" in text
    signatures = [line for line in text.splitlines() if line.startswith("#")]
    assert not [s for s in signatures if re.search(r"[(,] ?_\w+", s)], "private arguments shown"


def test_version_is_the_changelogs_latest_release():
    import fastmlp

    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    sections = re.findall(r"^## \[([^\]]+)\](.*)$", changelog, re.M)
    assert sections[0][0] == "Unreleased"
    version, rest = sections[1]
    assert version == fastmlp.__version__, (version, fastmlp.__version__)
    assert re.fullmatch(r" - \d{4}-\d{2}-\d{2}", rest), rest


def test_files_the_docs_name_exist():
    for name in ("README.md", "CHANGELOG.md"):
        text = (ROOT / name).read_text(encoding="utf-8")
        assert "kernels/layout.py" not in text, name
    named = set(re.findall(r"`((?:fastmlp|benchmarks|examples|docs|tests)/[\w/.]+\.\w+)`",
                           README))
    assert named, "no paths found"
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, missing


# --- examples ------------------------------------------------------------------------------


def test_train_mnist_example_saves_into_models_only(small_mnist, tmp_path, monkeypatch,
                                                    capsys):
    import fastmlp.datasets

    X_train, y_train, X_test, y_test = small_mnist
    monkeypatch.setattr(fastmlp.datasets, "load_mnist", lambda *a, **k: (
        X_train[:360], y_train[:360], X_test[:100], y_test[:100]))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(ROOT / "examples" / "train_mnist.py"), run_name="__main__")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "models", str(Path("models") / "mnist_example.npz")]
    assert "saved models/mnist_example.npz" in capsys.readouterr().out
    assert (ROOT / ".gitignore").read_text().splitlines().count("/models/") == 1
