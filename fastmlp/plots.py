"""Pictures of a training run as PNG files: learning curves, confusion matrix, worst mistakes.

matplotlib is optional (``pip install 'fastmlp[plot]'``, or ``pip install -e '.[plot]'`` in a checkout) and imported on first use. Only its
object-oriented API is used -- a ``Figure`` drawn by the Agg canvas -- so no window opens, no
GUI backend is needed, and pyplot's global state is never touched. Every file is written
atomically (:func:`fastmlp.io.atomic_write`).

    from fastmlp import plots
    plots.plot_history(net.history, "runs/curves.png")
    plots.plot_confusion(y_test, net.predict(X_test), "runs/confusion.png")
    plots.plot_misclassified(X_test, y_test, net.predict_proba(X_test), "runs/mistakes.png")
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = [
    "require_matplotlib",
    "confusion_matrix",
    "plot_history",
    "plot_confusion",
    "plot_misclassified",
    "write_plots",
    "FILES",
]

#: File names that :func:`write_plots` writes into its folder.
FILES = {
    "curves": "curves.png",
    "confusion": "confusion.png",
    "misclassified": "misclassified.png",
}

DPI = 110


def require_matplotlib():
    """The ``matplotlib.figure.Figure`` class, or ImportError saying how to install it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        from ._hints import install_hint

        raise ImportError(f"plots need matplotlib: {install_hint('plot', 'matplotlib')}"
                          ) from None

    def new_figure(**kw):
        fig = Figure(**kw)
        FigureCanvasAgg(fig)  # draw with Agg whatever backend the user has configured
        return fig

    return new_figure


def _save(fig, path):
    from .io import atomic_write

    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
    return path


def confusion_matrix(y_true, y_pred, n_classes=None):
    """``C[i, j]`` = how many samples of true class ``i`` were predicted as ``j``."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.size} vs {y_pred.size}")
    if n_classes is None:
        n_classes = int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def _history_dict(history):
    if history is None:
        return {}
    if hasattr(history, "to_dict"):
        return history.to_dict()
    return dict(history)


def _finite(values):
    return [float(v) if v is not None and math.isfinite(float(v)) else float("nan")
            for v in (values or [])]


def plot_history(history, path, title=None):
    """Loss and accuracy per epoch, training vs validation, side by side.

    ``history`` is a :class:`fastmlp.network.History` or its ``to_dict()``. Returns the
    path, or None (and writes nothing) when the history has no epochs.
    """
    new_figure = require_matplotlib()
    from matplotlib.ticker import MaxNLocator

    h = _history_dict(history)
    loss, val_loss = _finite(h.get("loss")), _finite(h.get("val_loss"))
    acc, val_acc = _finite(h.get("accuracy")), _finite(h.get("val_accuracy"))
    if not (loss or acc):
        return None
    fig = new_figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    best = h.get("best_epoch")
    for ax, train, val, name in ((ax_loss, loss, val_loss, "loss"),
                                 (ax_acc, acc, val_acc, "accuracy")):
        if train:
            ax.plot(range(1, len(train) + 1), train, "o-", ms=3, label="training")
        if val:
            ax.plot(range(1, len(val) + 1), val, "s-", ms=3, label="validation")
        if isinstance(best, int) and 0 <= best < max(len(train), len(val)):
            ax.axvline(best + 1, color="0.6", ls="--", lw=1, label=f"best (epoch {best + 1})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_confusion(y_true, y_pred, path, class_names=None, title=None):
    """The confusion matrix as a heat map (colour: fraction of the true class; text: count)."""
    new_figure = require_matplotlib()
    n = None if class_names is None else len(class_names)
    matrix = confusion_matrix(y_true, y_pred, n)
    n = matrix.shape[0]
    names = [str(c) for c in (class_names if class_names is not None else range(n))]
    rows = matrix.sum(axis=1, keepdims=True)
    share = matrix / np.maximum(rows, 1)
    side = max(5.0, 0.55 * n + 2)
    fig = new_figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="fraction of the true class", shrink=0.8)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=45 if max(map(len, names)) > 2 else 0,
                  ha="right" if max(map(len, names)) > 2 else "center")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    ax.set_title(title or f"confusion matrix — accuracy {100 * accuracy:.2f} % "
                          f"of {matrix.sum()}")
    return _save(fig, path)


def _as_images(X):
    X = np.asarray(X)
    if X.ndim == 3:
        return X
    side = int(round(math.sqrt(X.shape[1])))
    if side * side != X.shape[1]:
        raise ValueError(f"cannot show rows of {X.shape[1]} values as square images")
    return X.reshape(X.shape[0], side, side)


def plot_misclassified(X, y_true, proba, path, class_names=None, count=36, title=None):
    """The ``count`` mistakes the network was most sure of, as a grid of images.

    ``X`` is ``(n, 784)`` (or ``(n, 28, 28)``), ``proba`` the network's ``predict_proba(X)``.
    Each image is captioned ``true → predicted (confidence)``.
    """
    new_figure = require_matplotlib()
    proba = np.asarray(proba)
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    pred = proba.argmax(axis=1)
    confidence = proba[np.arange(pred.size), pred]
    wrong = np.flatnonzero(pred != y_true)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    names = [str(c) for c in (class_names if class_names is not None
                              else range(proba.shape[1]))]
    if len(wrong) == 0:
        fig = new_figure(figsize=(6, 2))
        ax = fig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, f"no misclassified samples among {y_true.size}", ha="center",
                va="center")
        return _save(fig, path)
    images = _as_images(np.asarray(X)[wrong])
    cols = min(6, math.ceil(math.sqrt(len(wrong))))
    rows = math.ceil(len(wrong) / cols)
    fig = new_figure(figsize=(max(4.0, 1.7 * cols + 0.4), 1.9 * rows + 0.6),
                     layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i, img in zip(axes, wrong, images):
        ax.imshow(img, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{names[y_true[i]]} → {names[pred[i]]} ({100 * confidence[i]:.0f} %)",
                     fontsize=8)
    fig.suptitle(title or f"most confident mistakes ({len(wrong)} of "
                          f"{int((pred != y_true).sum())} shown, true → predicted)",
                 fontsize=10)
    return _save(fig, path)


def write_plots(folder, history=None, X=None, y_true=None, proba=None, class_names=None,
                title=None):
    """Write every plot that the given data allows into ``folder`` (created if needed).

    Returns ``{"curves" | "confusion" | "misclassified": path}`` for the files written.
    """
    require_matplotlib()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    if history is not None:
        path = plot_history(history, folder / FILES["curves"], title=title)
        if path is not None:
            written["curves"] = path
    if y_true is not None and proba is not None:
        pred = np.asarray(proba).argmax(axis=1)
        written["confusion"] = plot_confusion(y_true, pred, folder / FILES["confusion"],
                                              class_names)
        if X is not None:
            written["misclassified"] = plot_misclassified(
                X, y_true, proba, folder / FILES["misclassified"], class_names)
    return written
