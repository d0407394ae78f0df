"""The ``fastmlp`` command: train | evaluate | predict | info | serve | bench.

``fastmlp train`` with no options runs the recommended MNIST recipe (``DEFAULT_RECIPE``) and
saves the model to ``models/mnist.npz`` under the current folder (``models/<dataset>.npz``
for other datasets), with its training History beside it in ``models/mnist.history.json``.
``fastmlp serve`` with no ``--model`` serves that file.

Errors (bad arguments, missing or corrupt files, unknown datasets, ValueError from the
library) print one line, ``fastmlp: error: ...``, on stderr and exit with status 2. Ctrl-C
stops cleanly with status 130: files are only ever written whole (atomically), so an
interrupted run leaves the previous files, or none -- never half of one.

Everything heavy (numpy, numba, the kernels, matplotlib) is imported inside the commands,
so ``fastmlp --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
import time
from pathlib import Path

# --------------------------------------------------------------------------- the recipe
# The settings `fastmlp train` uses for every option not given on the command line. Tuned
# for MNIST on a 2-core machine: the target is >= 98.5 % test accuracy in <= 60 s wall time.
# Measured (seed 0, --threads 2, 2 shared cores, warm numba cache): this recipe 98.60 % in
# 40 s total; without dropout (lr 1e-3, batch 128) 98.47 %; dropout 0.2, batch 128, lr 1e-3,
# 12 epochs 98.53 % (but slower).
DEFAULT_RECIPE = {
    "dataset": "mnist",
    "categories": None,  # quickdraw only
    "hidden": [512, 256],
    "activation": "relu",
    "epochs": 10,
    "batch_size": 256,
    "lr": 2e-3,
    "optimizer": "adam",
    "momentum": 0.9,  # momentum optimizer only
    "nesterov": False,
    "schedule": "cosine",
    "l2": 0.0,
    "dropout": 0.2,
    "validation_split": 0.0,  # held out from the TRAINING set, never the test set
    "early_stopping": None,  # patience in epochs (monitors validation loss), None: off
    "seed": 0,
    "limit": None,  # train on the first N training images (tests and quick trials)
}
MODELS_DIR = Path("models")  #: where `train` saves by default, relative to the current folder
DATASET_NAMES = ("mnist", "fashion-mnist", "quickdraw")
OPTIMIZER_NAMES = ("sgd", "momentum", "adam")
SCHEDULE_NAMES = ("constant", "cosine", "step")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".pgm",
                  ".ppm", ".pbm")
# Options whose value cannot change the numbers a training run produces; --resume accepts
# new values for these (and for --epochs, which extends or shortens the run).
_RESUMABLE_CHANGES = ("epochs",)

CHECKPOINT_FORMAT = "fastmlp.checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_FILE = "checkpoint.json"


def default_model_path(dataset="mnist"):
    """``models/<dataset>.npz`` under the current folder: where ``train`` saves by default."""
    return MODELS_DIR / f"{dataset}.npz"


def history_path(model_path):
    """``runs/model.npz`` -> ``runs/model.history.json`` (what ``fastmlp serve`` reads)."""
    p = Path(model_path)
    stem = p.name[:-4] if p.name.endswith(".npz") else p.name
    return p.with_name(stem + ".history.json")


class CLIError(Exception):
    """A user-facing failure: printed as one ``fastmlp: error:`` line, exit status 2."""


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``fastmlp: error: ...``) instead of usage + exit."""

    def error(self, message):
        raise _UsageError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------- argument types


def _integer(low, high=None, what=None):
    """An argparse type: an integer in ``low .. high``, named ``what`` in its errors."""
    what = what or ("a positive integer" if low == 1 else f"an integer >= {low}")

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


_positive_int = _integer(1)
_nonnegative_int = _integer(0)
_port = _integer(0, 65535, "a port number 0..65535")


def _number(low=None, high=None, low_open=False, high_open=False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad = not math.isfinite(value)
        bad |= low is not None and (value <= low if low_open else value < low)
        bad |= high is not None and (value >= high if high_open else value > high)
        if bad:
            lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
            hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
            raise argparse.ArgumentTypeError(f"must be in {lo}, {hi}, got {text!r}")
        return value

    return parse


def _hidden(text):
    """``512,256`` -> [512, 256]; ``none`` or an empty string -> [] (no hidden layer)."""
    if text.strip().lower() in ("", "none"):
        return []
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated positive layer sizes like 512,256, got {text!r} "
                f"({part!r} is not a positive integer)")
        sizes.append(int(part))
    return sizes


def _names(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


# ----------------------------------------------------------------------------- parser


def build_parser():
    parser = _Parser(
        prog="fastmlp",
        description="Multilayer perceptrons trained fast on a CPU (numpy + numba).",
        epilog="Run 'fastmlp COMMAND --help' for a command's options. Start with "
               "'fastmlp train' (the recommended MNIST recipe), then 'fastmlp serve'.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"fastmlp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    fmt = argparse.RawDescriptionHelpFormatter
    r = DEFAULT_RECIPE
    t = sub.add_parser(
        "train", help="train a network and save it", formatter_class=fmt,
        description="Train a network on a dataset, report its test accuracy and save it.\n\n"
                    "With no options this runs the recommended MNIST recipe:\n"
                    + _wrap_options(_recipe_text(DEFAULT_RECIPE))
                    + "\nand saves models/mnist.npz (models/<dataset>.npz for other datasets)"
                    "\nunder the current folder, with its training history in "
                    "models/mnist.history.json.",
        epilog="examples:\n"
               "  fastmlp train\n"
               "  fastmlp train --hidden 256 --optimizer momentum --nesterov --lr 0.05\n"
               "  fastmlp train --validation-split 0.1 --early-stopping 3 --epochs 30\n"
               "  fastmlp train --dataset quickdraw --categories cat,dog,apple\n"
               "  fastmlp train --checkpoint ckpt/   (later, after Ctrl-C: add --resume)")
    g = t.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASET_NAMES, default=None,
                   help=f"dataset to train on (default: {r['dataset']})")
    g.add_argument("--categories", type=_names, default=None, metavar="A,B,...",
                   help="Quick, Draw! categories, e.g. cat,dog,apple (quickdraw only)")
    _data_options(g)
    g.add_argument("--validation-split", type=_number(0, 1, high_open=True), default=None,
                   metavar="F",
                   help="fraction of the TRAINING set held out for validation (never the "
                        f"test set; default: {r['validation_split']:g})")
    g.add_argument("--limit", type=_positive_int, default=None, help=argparse.SUPPRESS)

    g = t.add_argument_group("network")
    g.add_argument("--hidden", type=_hidden, default=None, metavar="N,N,...",
                   help="hidden layer sizes (default: "
                        f"{','.join(map(str, r['hidden'])) or 'none'}; 'none' for no hidden "
                        "layer)")
    g.add_argument("--activation", default=None, metavar="NAME",
                   help="hidden-layer activation: relu, sigmoid, tanh or identity (default: "
                        f"{r['activation']})")
    g.add_argument("--seed", type=_nonnegative_int, default=None,
                   help=f"seeds initialization, shuffling and the split (default: {r['seed']})")

    g = t.add_argument_group("training")
    g.add_argument("--epochs", type=_positive_int, default=None, metavar="N",
                   help=f"passes over the training set (default: {r['epochs']})")
    g.add_argument("--batch-size", type=_positive_int, default=None, metavar="B",
                   help=f"samples per gradient step (default: {r['batch_size']})")
    g.add_argument("--lr", type=_number(0, low_open=True), default=None, metavar="X",
                   help=f"learning rate (default: {r['lr']:g})")
    g.add_argument("--optimizer", choices=OPTIMIZER_NAMES, default=None,
                   help=f"update rule (default: {r['optimizer']})")
    g.add_argument("--momentum", type=_number(0, 1, high_open=True), default=None,
                   metavar="M",
                   help=f"momentum coefficient for --optimizer momentum "
                        f"(default: {r['momentum']:g})")
    g.add_argument("--nesterov", action="store_true", default=None,
                   help="Nesterov momentum (needs --optimizer momentum)")
    g.add_argument("--schedule", choices=SCHEDULE_NAMES, default=None,
                   help="learning-rate schedule: constant, cosine (to zero over the epochs) "
                        f"or step (halved every third of them) (default: {r['schedule']})")
    g.add_argument("--l2", type=_number(0), default=None, metavar="X",
                   help=f"L2 weight decay, adds l2/2*sum(W**2) (default: {r['l2']:g})")
    g.add_argument("--dropout", type=_number(0, 1, high_open=True), default=None,
                   metavar="P", help=f"dropout rate of hidden layers (default: {r['dropout']:g})")
    g.add_argument("--early-stopping", type=_positive_int, default=None, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a lower validation loss and keep "
                        "the best weights (needs --validation-split)")
    g.add_argument("--threads", type=_positive_int, default=None, metavar="T",
                   help="threads for the compiled kernels (default: numba's, all cores)")

    g = t.add_argument_group("output")
    g.add_argument("--out", "--save", type=Path, default=None, metavar="MODEL.npz",
                   help="where to save the model (default: models/<dataset>.npz); its "
                        "History goes beside it as <stem>.history.json")
    g.add_argument("--checkpoint", type=Path, default=None, metavar="DIR",
                   help="save everything needed to resume into DIR after every epoch")
    g.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint in --checkpoint DIR (same results as "
                        "an uninterrupted run); starts afresh if DIR holds none")
    g.add_argument("--plot", type=Path, default=None, metavar="DIR",
                   help="write PNG plots (curves, confusion matrix, mistakes) into DIR "
                        "(needs matplotlib)")
    g.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar and no per-epoch lines")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate", help="test accuracy of a saved model, per class",
        description="Accuracy, loss and per-class accuracy of a saved model on a test set. "
                    "The dataset defaults to the one the model was trained on (read from "
                    "its .history.json), else mnist.")
    e.add_argument("model", type=Path, metavar="MODEL", help="a model saved by fastmlp train")
    e.add_argument("--dataset", choices=DATASET_NAMES, default=None,
                   help="test set to use (default: the model's, else mnist)")
    e.add_argument("--categories", type=_names, default=None, metavar="A,B,...",
                   help="Quick, Draw! categories, in training order (quickdraw only)")
    _data_options(e)
    e.add_argument("--threads", type=_positive_int, default=None, metavar="T",
                   help="threads for the compiled kernels")
    e.add_argument("--plot", type=Path, default=None, metavar="DIR",
                   help="write PNG plots into DIR (needs matplotlib)")
    e.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict", help="classify images or .npy arrays", formatter_class=fmt,
        description="Print the predicted label and top probabilities of every file / sample.\n"
                    "\n"
                    ".npy arrays: shape (784,), (n, 784), (28, 28) or (n, 28, 28); uint8\n"
                    "  0..255 is scaled to 0..1, floats must already be in 0..1 (ink = 1).\n"
                    "Images (.png, .jpg, ...; needs Pillow): any size, either polarity; they\n"
                    "  are cropped, scaled and centred the way MNIST's digits were.")
    p.add_argument("model", type=Path, metavar="MODEL", help="a model saved by fastmlp train")
    p.add_argument("files", type=Path, nargs="+", metavar="FILE", help=".npy arrays or images")
    p.add_argument("--top", type=_positive_int, default=3, metavar="K",
                   help="how many classes to list per sample (default: 3)")
    p.set_defaults(func=cmd_predict)

    i = sub.add_parser("info", help="versions, threads, data folder and caches",
                       description="Print versions, thread counts, the data folder and which "
                                   "datasets are there, and the numba cache folder.")
    _data_options(i, download=False)
    i.set_defaults(func=cmd_info)

    s = sub.add_parser(
        "serve", help="the draw-a-digit web page",
        description="Serve the draw-a-digit page for a model (Ctrl-C stops). Without --model "
                    "it serves models/mnist.npz, the model 'fastmlp train' saves by default.")
    s.add_argument("--model", type=Path, default=None, metavar="MODEL",
                   help=f"model file (default: {default_model_path()})")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    s.add_argument("--port", type=_port, default=8000, help="port (default: 8000; 0: any free)")
    s.set_defaults(func=cmd_serve)

    # `fastmlp bench ...` is dispatched in main() before parsing; listed here for --help.
    b = sub.add_parser("bench", help="benchmarks (options: fastmlp bench --help)",
                       add_help=False)
    b.add_argument("args", nargs=argparse.REMAINDER)
    b.set_defaults(func=lambda args: _bench(args.args))
    return parser


def _data_options(group, download=True):
    group.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                       help="data folder (default: $FASTMLP_DATA, else the user cache folder)")
    if download:
        group.add_argument("--no-download", action="store_true",
                           help="fail instead of downloading missing dataset files")


def _wrap_options(text, width=78):
    """Wrap ``--option value ...`` text without separating an option from its value."""
    glued = text.replace(" ", "\xa0").replace("\xa0--", " --")
    return textwrap.fill(glued, width, initial_indent="  ", subsequent_indent="  "
                         ).replace("\xa0", " ")


def _recipe_text(recipe):
    hidden = ",".join(map(str, recipe["hidden"])) or "none"
    text = (f"--dataset {recipe['dataset']} --hidden {hidden} --activation "
            f"{recipe['activation']} --optimizer {recipe['optimizer']} --lr {recipe['lr']:g} "
            f"--schedule {recipe['schedule']} --batch-size {recipe['batch_size']} "
            f"--epochs {recipe['epochs']} --seed {recipe['seed']}")
    if recipe["optimizer"] == "momentum":
        text += f" --momentum {recipe['momentum']:g}" + (" --nesterov" if recipe["nesterov"]
                                                         else "")
    for key in ("l2", "dropout", "validation_split"):
        if recipe[key]:
            text += f" --{key.replace('_', '-')} {recipe[key]:g}"
    if recipe["early_stopping"]:
        text += f" --early-stopping {recipe['early_stopping']}"
    return text


# ------------------------------------------------------------------------------- main


def main(argv=None):
    """Run the command line; returns the exit status (0 ok, 2 error, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        if argv and argv[0] == "bench":
            return _bench(argv[1:])
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return exc.code if isinstance(exc.code, int) else 0
        if args.command is None:
            raise _UsageError("missing command: choose one of train, evaluate, predict, "
                              "info, serve, bench (see 'fastmlp --help')")
        return args.func(args) or 0
    except _UsageError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("\nfastmlp: interrupted", file=sys.stderr)
        return 130
    except CLIError as exc:
        return _fail(str(exc))
    except BrokenPipeError:
        # `fastmlp evaluate ... | head`: the reader left; not an error worth a message.
        # Point stdout at devnull so that the interpreter's final flush stays quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if exc.strerror and exc.filename:
            return _fail(f"{exc.strerror}: {os.fspath(exc.filename)}")
        return _fail(str(exc) or type(exc).__name__)
    except (ValueError, ImportError, FloatingPointError) as exc:
        return _fail(str(exc) or type(exc).__name__)


def _fail(message):
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    print(f"fastmlp: error: {' '.join(lines)}", file=sys.stderr)
    return 2


def _bench(argv):
    try:
        from . import bench
    except ModuleNotFoundError as exc:
        if exc.name in ("fastmlp.bench", f"{__package__}.bench"):
            raise CLIError("fastmlp bench is not available in this installation "
                           "(fastmlp/bench.py is missing)") from None
        raise ImportError(f"fastmlp bench needs {exc.name}: pip install 'fastmlp[bench]'"
                          ) from None
    try:
        status = bench.main(list(argv))
    except SystemExit as exc:  # its argparse: --help, usage errors
        status = exc.code if isinstance(exc.code, int) or exc.code is None else 2
    return 0 if status is None else int(status)


# ------------------------------------------------------------------------------ train


def _resolve_recipe(args):
    """DEFAULT_RECIPE overridden by every option given on the command line."""
    recipe = dict(DEFAULT_RECIPE)
    recipe.update(_explicit(args))
    return recipe


def _explicit(args):
    return {k: getattr(args, k) for k in DEFAULT_RECIPE if getattr(args, k, None) is not None}


def _check_recipe(recipe):
    if recipe["dataset"] == "quickdraw":
        if not recipe["categories"]:
            raise CLIError("--dataset quickdraw needs --categories, e.g. --categories "
                           "cat,dog,apple")
        if len(recipe["categories"]) < 2:
            raise CLIError("--categories needs at least two categories to tell apart")
    elif recipe["categories"]:
        raise CLIError(f"--categories is for --dataset quickdraw, not {recipe['dataset']}")
    if recipe["nesterov"] and recipe["optimizer"] != "momentum":
        raise CLIError(f"--nesterov needs --optimizer momentum (the optimizer is "
                       f"{recipe['optimizer']})")
    if recipe["early_stopping"] and not recipe["validation_split"]:
        raise CLIError("--early-stopping watches the validation loss: add "
                       "--validation-split, e.g. --validation-split 0.1")


def _class_names(dataset, categories=None, n=10):
    if dataset == "quickdraw" and categories:
        return list(categories)
    if dataset == "fashion-mnist":
        return list(FASHION_CLASSES)
    return [str(i) for i in range(n)]


def _load_data(dataset, data_dir, categories=None, download=True, progress=True):
    from .datasets import DatasetNotFoundError, load_dataset

    kw = {"download": download, "progress": progress}
    if dataset == "quickdraw":
        kw["categories"] = list(categories)
    try:
        return load_dataset(dataset, data_dir=data_dir, **kw)
    except DatasetNotFoundError as exc:
        raise CLIError(str(exc).replace("pass download=True", "drop --no-download")) from None


def _set_threads(threads):
    if threads is not None:
        from ._threads import set_num_threads

        set_num_threads(threads)


def _split(X, y, fraction, seed):
    """(train, validation) parts of the training set: a seeded random ``fraction`` held out."""
    import numpy as np

    n = len(y)
    n_val = int(round(fraction * n))
    if not fraction:
        return (X, y), None
    if n_val < 1 or n_val >= n:
        raise CLIError(f"--validation-split {fraction:g} of {n} training samples leaves "
                       f"{n_val} for validation and {n - n_val} for training; both need one")
    order = np.random.default_rng([seed, 1]).permutation(n)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    return (X[train], y[train]), (X[val], y[val])


def cmd_train(args):
    started = time.perf_counter()
    explicit = _explicit(args)
    recipe = _resolve_recipe(args)
    if args.resume and args.checkpoint is None:
        raise CLIError("--resume needs --checkpoint DIR (the folder to resume from)")
    checkpoint = None
    if args.checkpoint is not None:
        checkpoint = _Checkpoints(args.checkpoint)
        found = checkpoint.read()
        if found is not None and not args.resume:
            raise CLIError(f"{args.checkpoint} already holds a checkpoint (epoch "
                           f"{found['epoch']}); add --resume to continue it, or choose "
                           "another --checkpoint folder")
        if found is not None:
            recipe = _resumed_recipe(found["config"], explicit)
        elif args.resume:
            _note(args, f"no checkpoint in {args.checkpoint} yet; starting from scratch")
    else:
        found = None
    _check_recipe(recipe)
    out = args.out if args.out is not None else default_model_path(recipe["dataset"])
    if args.plot is not None:
        from .plots import require_matplotlib

        require_matplotlib()  # fail now, not after training
    _set_threads(args.threads)

    from .network import Network

    X_train, y_train, X_test, y_test = _load_data(
        recipe["dataset"], args.data_dir, recipe["categories"], not args.no_download,
        not args.quiet)
    if recipe["limit"] is not None:
        X_train, y_train = X_train[:recipe["limit"]], y_train[:recipe["limit"]]
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    names = _class_names(recipe["dataset"], recipe["categories"], n_classes)
    (X_fit, y_fit), validation = _split(X_train, y_train, recipe["validation_split"],
                                        recipe["seed"])
    sizes = [X_train.shape[1], *recipe["hidden"], n_classes]
    activations = [recipe["activation"]] * len(recipe["hidden"]) + ["softmax"]
    net = Network(sizes, activations, seed=recipe["seed"])
    done = 0
    total = recipe["epochs"]
    if found is not None:
        done = checkpoint.restore(found, net)

    header = (f"fastmlp: {'-'.join(map(str, sizes))} {recipe['activation']}, "
              f"{recipe['optimizer']} lr {recipe['lr']:g} ({recipe['schedule']}), batch "
              f"{recipe['batch_size']}, {total} epochs on {len(y_fit)} {recipe['dataset']} "
              "images"
              + (f" (+{len(validation[1])} for validation)" if validation else "")
              + f", {_threads_in_use()} threads")
    _note(args, header)
    if not _kernels_cached():
        _note(args, "fastmlp: first run: compiling the kernels (about 20-30 s; cached for "
                    "later runs)")
    if done:
        _note(args, f"fastmlp: resuming from {args.checkpoint} after epoch {done}")

    def callback(epoch, history):
        if checkpoint is not None:
            checkpoint.save(net, recipe)

    fit_seconds = 0.0
    if done < total:
        fit_started = time.perf_counter()
        try:
            net.fit(X_fit, y_fit, epochs=total, initial_epoch=done,
                    batch_size=recipe["batch_size"],
                    learning_rate=recipe["lr"], optimizer=recipe["optimizer"],
                    l2=recipe["l2"], dropout=recipe["dropout"], validation_data=validation,
                    verbose=not args.quiet, momentum=recipe["momentum"],
                    nesterov=recipe["nesterov"], schedule=recipe["schedule"],
                    early_stopping=recipe["early_stopping"] or 0, callback=callback)
        except KeyboardInterrupt:
            where = ""
            if checkpoint is not None and checkpoint.epoch:
                where = (f"; the checkpoint of epoch {checkpoint.epoch} is in "
                         f"{args.checkpoint} (add --resume to continue)")
            print(f"\nfastmlp: interrupted after {net.history.epochs} epoch(s); model not "
                  f"saved{where}", file=sys.stderr)
            return 130
        fit_seconds = time.perf_counter() - fit_started
    else:
        _note(args, f"fastmlp: the checkpoint has finished training ({done} epochs)")
    best = net.history.best_epoch
    if recipe["early_stopping"] and best is not None and best != net.history.epochs:
        print(f"kept the weights of epoch {best} (validation loss "
              f"{net.history.val_loss[best - 1]:.4f})")

    scores = net.evaluate(X_test, y_test)
    wall = time.perf_counter() - started
    print(f"test accuracy {100 * scores['accuracy']:.2f} %  (loss {scores['loss']:.4f}, "
          f"{len(y_test)} images)")
    print(f"time: training {fit_seconds:.1f} s, total {wall:.1f} s")

    run = {
        "dataset": recipe["dataset"],
        "classes": names,
        "recipe": recipe,
        "test_loss": scores["loss"],
        "test_accuracy": scores["accuracy"],
        "train_seconds": fit_seconds,
        "wall_seconds": wall,
        "threads": _threads_in_use(),
    }
    _save_model(net, out, run)
    print(f"saved {out} and {history_path(out)}")
    if args.plot is not None:
        from .plots import write_plots

        proba = net.predict_proba(X_test)
        written = write_plots(args.plot, net.history, X_test, y_test, proba, names)
        print("plots: " + ", ".join(str(p) for p in written.values()))
    return 0


def _note(args, line):
    if not args.quiet:
        print(line, flush=True)


def _threads_in_use():
    try:
        from ._threads import get_num_threads

        return get_num_threads()
    except Exception:  # pragma: no cover - numba missing or broken
        return None


def _resumed_recipe(saved, explicit):
    """The checkpoint's settings; an option given now must agree with it (except epochs)."""
    recipe = dict(DEFAULT_RECIPE)
    recipe.update({k: v for k, v in saved.items() if k in DEFAULT_RECIPE})
    for key, value in explicit.items():
        if key in _RESUMABLE_CHANGES:
            recipe[key] = value
            continue
        if _comparable(value) != _comparable(recipe[key]):
            flag = "--" + key.replace("_", "-")
            raise CLIError(f"{flag} {_show(value)} differs from the checkpoint's "
                           f"{_show(recipe[key])}; resume with the same settings, or start a "
                           "new --checkpoint folder")
    return recipe


def _comparable(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _show(value):
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _write_json(path, data):
    from .io import atomic_write

    text = json.dumps(data, indent=1, default=_json_default)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _save_model(net, out, run):
    """The model and its History JSON, each written atomically (history first, so a model
    file never lacks its history)."""
    out = Path(out)
    if out.parent != Path(""):
        out.parent.mkdir(parents=True, exist_ok=True)
    data = net.history.to_dict()
    data["run"] = run
    _write_json(history_path(out), data)
    net.save(out)


# ------------------------------------------------------------------------ checkpoints
#
# A checkpoint folder holds, for the last finished epoch k:
#   epoch-000k.model.npz  Network.save: weights, biases and the History so far
#   epoch-000k.state.npz  arrays: optimizer state ("opt.<key>"), early stopping's best weights
#   checkpoint.json       the commit record, written last: format, epoch, the settings, the
#                         rest of Network.training_state(), early-stopping scalars
# Each file is written atomically and checkpoint.json names the other two, so an interrupted
# save leaves the previous checkpoint intact; older epoch files are deleted after the commit.


class _Checkpoints:
    def __init__(self, folder):
        self.folder = Path(folder)
        self.epoch = 0

    def read(self):
        path = self.folder / CHECKPOINT_FILE
        if self.folder.exists() and not self.folder.is_dir():
            raise CLIError(f"--checkpoint {self.folder} is a file, not a folder")
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CLIError(f"{path} is not a readable checkpoint: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
            raise CLIError(f"{path} is not a fastmlp checkpoint")
        if data.get("version") != CHECKPOINT_VERSION:
            raise CLIError(f"{path} has checkpoint version {data.get('version')!r}; this "
                           f"fastmlp reads version {CHECKPOINT_VERSION}")
        for key in ("epoch", "config", "model", "state", "training_state"):
            if key not in data:
                raise CLIError(f"{path} is not a valid checkpoint: no {key!r}")
        self.epoch = data["epoch"]
        return data

    def save(self, net, recipe):
        import numpy as np

        self.folder.mkdir(parents=True, exist_ok=True)
        epoch = net.history.epochs
        stem = f"epoch-{epoch:04d}"
        model, state = f"{stem}.model.npz", f"{stem}.state.npz"
        training_state, arrays = _split_training_state(net.training_state())
        from .io import atomic_write

        net.save(self.folder / model)
        atomic_write(self.folder / state, lambda f: np.savez(f, **arrays))
        _write_json(self.folder / CHECKPOINT_FILE, {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "epoch": epoch,
            "config": recipe,
            "model": model,
            "state": state,
            "training_state": training_state,
        })
        self.epoch = epoch
        keep = {model, state}
        for old in self.folder.glob("epoch-*.npz"):
            if old.name not in keep:
                old.unlink(missing_ok=True)

    def restore(self, data, net):
        """Load the checkpoint into ``net`` (built with the run's settings and seed).

        Returns the number of epochs done."""
        import numpy as np

        from .network import Network

        saved = Network.load(self.folder / data["model"])
        if saved.layer_sizes != net.layer_sizes:
            raise CLIError(f"the checkpoint's network is {saved.layer_sizes}, the data needs "
                           f"{net.layer_sizes}")
        net.weights = saved.weights
        net.biases = saved.biases
        net.history = saved.history
        if net.history.epochs != data["epoch"]:
            raise CLIError(f"{self.folder}: the checkpoint's history has "
                           f"{net.history.epochs} epochs, its record says {data['epoch']}")
        try:
            with np.load(self.folder / data["state"], allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
        except (OSError, ValueError, EOFError) as exc:
            raise CLIError(f"{self.folder / data['state']} is not readable: {exc}") from None
        try:
            net.set_training_state(_join_training_state(data["training_state"], arrays))
        except (KeyError, TypeError, ValueError) as exc:
            raise CLIError(f"{self.folder}: invalid training state ({exc})") from None
        return data["epoch"]


def _split_training_state(state):
    """Network.training_state() as ``(json-able dict, {name: array})`` for a checkpoint:
    the optimizer's arrays as "opt.<key>", early stopping's best parameters as "best"."""
    import numpy as np

    arrays = {f"opt.{k}": v for k, v in state["state"].items() if isinstance(v, np.ndarray)}
    info = {"optimizer": state["optimizer"], "rng": state["rng"],
            "dropout_key": state["dropout_key"], "early_stopping": None,
            "scalars": {k: (v.item() if isinstance(v, np.generic) else v)
                        for k, v in state["state"].items() if not isinstance(v, np.ndarray)}}
    best = state["early_stopping"]
    if best is not None:
        if best["best_params"] is not None:
            arrays["best"] = best["best_params"]
        info["early_stopping"] = {
            "since_best": best["since_best"],
            # JSON has no infinity: None stands for "no validation loss yet"
            "best_loss": best["best_loss"] if math.isfinite(best["best_loss"]) else None}
    return info, arrays


def _join_training_state(info, arrays):
    state = dict(info["scalars"])
    state.update({k[4:]: v for k, v in arrays.items() if k.startswith("opt.")})
    best = info.get("early_stopping")
    if best is not None:
        loss = best["best_loss"]
        best = {"since_best": best["since_best"], "best_params": arrays.get("best"),
                "best_loss": math.inf if loss is None else loss}
    return {"optimizer": info["optimizer"], "state": state, "rng": info["rng"],
            "dropout_key": info["dropout_key"], "early_stopping": best}


# --------------------------------------------------------------------------- evaluate


def _sidecar(model_path):
    """The ``run`` record that ``train`` wrote beside a model, or {}."""
    try:
        data = json.loads(history_path(model_path).read_text(encoding="utf-8"))
        run = data.get("run", {}) if isinstance(data, dict) else {}
        return run if isinstance(run, dict) else {}
    except (OSError, ValueError):
        return {}


def _load_model(path):
    from .network import Network

    path = Path(path)
    if not path.exists():
        raise CLIError(f"model file {path} does not exist (train one with 'fastmlp train')")
    return Network.load(path)


def cmd_evaluate(args):
    import numpy as np

    from .plots import confusion_matrix

    if args.plot is not None:
        from .plots import require_matplotlib

        require_matplotlib()
    net = _load_model(args.model)
    run = _sidecar(args.model)
    dataset = args.dataset or run.get("dataset") or "mnist"
    categories = args.categories
    if dataset == "quickdraw" and categories is None and run.get("dataset") == "quickdraw":
        categories = run.get("classes")
    if dataset == "quickdraw" and not categories:
        raise CLIError("--dataset quickdraw needs --categories (in the order used for "
                       "training)")
    if dataset != "quickdraw" and args.categories:
        raise CLIError(f"--categories is for --dataset quickdraw, not {dataset}")
    _set_threads(args.threads)
    _, _, X, y = _load_data(dataset, args.data_dir, categories, not args.no_download, True)
    n_classes = (len(categories) if dataset == "quickdraw" else 10)
    if net.n_inputs != X.shape[1] or net.n_outputs != n_classes:
        raise CLIError(f"{args.model} takes {net.n_inputs} inputs and has {net.n_outputs} "
                       f"outputs; {dataset} has {X.shape[1]} pixels and {n_classes} classes")
    names = _class_names(dataset, categories, n_classes)
    scores = net.evaluate(X, y)
    proba = net.predict_proba(X)
    pred = proba.argmax(axis=1)
    matrix = confusion_matrix(y, pred, n_classes)
    print(f"model     {args.model}  ({'-'.join(map(str, net.layer_sizes))})")
    print(f"dataset   {dataset} test set, {len(y)} images")
    print(f"accuracy  {100 * scores['accuracy']:.2f} %")
    print(f"loss      {scores['loss']:.4f}")
    print()
    width = max(5, max(len(n) for n in names))
    print(f"{'class':>{width}}  {'count':>6}  {'correct':>7}  {'accuracy':>8}  most confused with")
    for k in range(n_classes):
        count, right = int(matrix[k].sum()), int(matrix[k, k])
        others = matrix[k].copy()
        others[k] = 0
        worst = int(np.argmax(others))
        confused = f"{names[worst]} ({others[worst]})" if others[worst] else "-"
        acc = f"{100 * right / count:7.2f}%" if count else "       -"
        print(f"{names[k]:>{width}}  {count:6d}  {right:7d}  {acc:>8}  {confused}")
    if args.plot is not None:
        from .plots import write_plots

        history = net.history if net.history.epochs else None
        written = write_plots(args.plot, history, X, y, proba, names)
        print("\nplots: " + ", ".join(str(p) for p in written.values()))
    return 0


# ---------------------------------------------------------------------------- predict


def _read_inputs(path):
    """``[(label, row of 784 floats)]`` for one .npy file or image."""
    import numpy as np

    path = Path(path)
    if not path.exists():
        raise CLIError(f"no such file: {path}")
    if path.is_dir():
        raise CLIError(f"{path} is a folder, not a file")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise CLIError(f"{path} is not a readable .npy array: {exc}") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "buif":
            raise CLIError(f"{path} holds {getattr(arr, 'dtype', type(arr))}, not numbers")
        shapes = {(784,): 1, (28, 28): 1}
        if arr.shape in shapes:
            arr = arr.reshape(1, 784)
            single = True
        elif arr.ndim == 2 and arr.shape[1] == 784 or arr.ndim == 3 and arr.shape[1:] == (28, 28):
            arr = arr.reshape(arr.shape[0], 784)
            single = False
        else:
            raise CLIError(f"{path} has shape {arr.shape}; expected (784,), (n, 784), (28, 28) "
                           "or (n, 28, 28)")
        if arr.dtype.kind in "iu":
            if arr.size and (arr.min() < 0 or arr.max() > 255):
                raise CLIError(f"{path}: integer pixels must be 0..255, got "
                               f"{arr.min()}..{arr.max()}")
            X = arr.astype(np.float32) / np.float32(255)
        else:
            X = arr.astype(np.float32)
            if not np.isfinite(X).all():
                raise CLIError(f"{path} contains NaN or infinite values")
            if X.size and (X.min() < 0 or X.max() > 1):
                raise CLIError(f"{path}: float pixels must be in 0..1 (ink = 1), got "
                               f"{X.min():g}..{X.max():g}; divide 0..255 data by 255")
        if single:
            return [(str(path), X[0])]
        return [(f"{path}[{i}]", X[i]) for i in range(X.shape[0])]
    from .images import load_image, to_mnist

    try:
        image = load_image(path)
    except ValueError as exc:
        raise CLIError(f"{path}: {exc}") from None
    try:
        return [(str(path), to_mnist(image).reshape(784))]
    except ValueError as exc:
        raise CLIError(f"{path}: {exc}") from None


def cmd_predict(args):
    import numpy as np

    net = _load_model(args.model)
    run = _sidecar(args.model)
    names = run.get("classes")
    if not isinstance(names, list) or len(names) != net.n_outputs:
        names = [str(i) for i in range(net.n_outputs)]
    if net.n_inputs != 784:
        raise CLIError(f"{args.model} takes {net.n_inputs} inputs; predict feeds 28x28 = 784")
    samples = [s for f in args.files for s in _read_inputs(f)]
    if not samples:
        raise CLIError("the files hold no samples")
    X = np.stack([row for _, row in samples])
    proba = net.predict_proba(X)
    top = min(args.top, net.n_outputs)
    for (label, _), p in zip(samples, proba):
        best = np.argsort(-p, kind="stable")[:top]
        ranked = ", ".join(f"{names[k]} {100 * p[k]:.2f}%" for k in best)
        print(f"{label}: {names[best[0]]}  ({ranked})")
    return 0


# ------------------------------------------------------------------------------- info


def cmd_info(args):
    import importlib.metadata
    import platform

    import numpy

    from . import __version__
    from .datasets import dataset_status

    print(f"fastmlp     {__version__}  ({Path(__file__).resolve().parent})")
    print(f"python      {platform.python_version()}  ({sys.executable})")
    print(f"numpy       {numpy.__version__}")
    try:
        import numba
    except ImportError:
        print("numba       missing (pip install numba)")
        numba = None
    else:
        print(f"numba       {numba.__version__}")
    optional = []
    for dist in ("tqdm", "matplotlib", "pillow", "scikit-learn"):
        try:
            optional.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            optional.append(f"{dist} -")
    print(f"optional    {', '.join(optional)}")
    if numba is not None:
        print(f"threads     {numba.get_num_threads()} in use, {numba.config.NUMBA_NUM_THREADS} "
              f"at most (NUMBA_NUM_THREADS; {os.cpu_count()} CPUs)")
        print(f"numba cache {_numba_cache_dir(numba)}")
    source = ("--data-dir" if args.data_dir is not None else
              "FASTMLP_DATA" if os.environ.get("FASTMLP_DATA") else "user cache folder")
    status = dataset_status(args.data_dir)
    print(f"data dir    {status['data_dir']}  (from {source})")
    for name in ("mnist", "fashion-mnist"):
        entry = status[name]
        if entry["present"]:
            where = Path(next(iter(entry["files"].values()))).parent
            print(f"  {name:14s} present  {where}")
        else:
            print(f"  {name:14s} missing {len(entry['missing'])} of 4 files (downloaded on "
                  "first use)")
    qd = status["quickdraw"]
    cats = qd["categories"]
    shown = ", ".join(cats[:8]) + (f", ... ({len(cats)})" if len(cats) > 8 else "")
    print(f"  {'quickdraw':14s} {shown if cats else 'no categories (downloaded on first use)'}")
    model = default_model_path()
    print(f"model       {model}: {'present' if model.is_file() else 'none yet (fastmlp train)'}")
    return 0


def _kernels_cached():
    """Whether numba's on-disk cache already holds the compiled training loop."""
    import importlib.util

    configured = os.environ.get("NUMBA_CACHE_DIR")
    if configured:
        return any(Path(configured).rglob("training.train_batches-*.nbi"))
    spec = importlib.util.find_spec("fastmlp.kernels")
    folder = Path(list(spec.submodule_search_locations)[0]) / "__pycache__"
    # Numba falls back to its user-wide cache when the package folder is read-only.
    return any(folder.glob("training.train_batches-*.nbi")) or any(
        (Path.home() / ".cache" / "numba").rglob("training.train_batches-*.nbi"))


def _numba_cache_dir(numba):
    configured = getattr(numba.config, "CACHE_DIR", "")
    if configured:
        return f"{configured} (NUMBA_CACHE_DIR)"
    import importlib.util

    spec = importlib.util.find_spec("fastmlp.kernels")
    folder = Path(list(spec.submodule_search_locations)[0]) / "__pycache__"
    return f"{folder} (beside the kernels; numba falls back to ~/.cache if not writable)"


# ------------------------------------------------------------------------------ serve


def cmd_serve(args):
    model = args.model
    if model is None:
        model = default_model_path()
        if not model.is_file():
            raise CLIError(f"no model at {model}: run 'fastmlp train' first (or pass --model)")
    elif not Path(model).is_file():
        raise CLIError(f"model file {model} does not exist (train one with 'fastmlp train')")
    from .web.server import serve  # it loads the model (ValueError if bad) before binding

    serve(str(model), host=args.host, port=args.port)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
