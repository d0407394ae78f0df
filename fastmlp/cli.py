"""The ``fastmlp`` command: train | evaluate | predict | export | info | serve | bench.

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
import stat
import sys
import textwrap
import time
from pathlib import Path

from .history import history_path  # light: no numpy

# --------------------------------------------------------------------------- the recipe
# The settings `fastmlp train` uses for every option not given on the command line. Tuned
# for MNIST on a 2-core machine: the target is >= 98.7 % test accuracy in <= 60 s wall time.
# Measured (seed 0, 2 threads, 2-vCPU AMD EPYC, warm cache, README "Results"): this recipe
# (random shifts of up to 1 pixel, 20 epochs) 99.05 % in 22.8 s of training; without the
# shifts 98.69 % (20 epochs), 98.49 % (10 epochs).
DEFAULT_RECIPE = {
    "dataset": "mnist",
    "categories": None,  # quickdraw only
    "model": "mlp",
    "layers": None,  # --model cnn: the layers after the (1, 28, 28) input, before the output
    "hidden": [512, 256],
    "activation": "relu",
    "epochs": 20,
    "batch_size": 256,
    "lr": 2e-3,
    "optimizer": "adam",
    "momentum": 0.9,  # momentum optimizer only
    "nesterov": False,
    "schedule": "cosine",
    "l2": 0.0,
    "dropout": 0.2,
    "augment": 1,  # data augmentation: the largest random shift in pixels (0: none)
    "rotate": 0.0,  # ... the largest random rotation in degrees
    "scale": 0.0,  # ... the largest random scaling, a fraction (0.1: 0.9x to 1.1x)
    "validation_split": 0.0,  # held out from the TRAINING set, never the test set
    "early_stopping": None,  # patience in epochs (monitors validation loss), None: off
    "seed": 0,
    "limit": None,  # train on the first N training images (tests and quick trials)
}
# `--model cnn` changes these defaults (options given on the command line still win). Target
# >= 99.5 % in <= 300 s. Measured (seed 0, 2 threads, 2-vCPU AMD EPYC, warm cache, README
# "Results"): this recipe 99.58 % in 210 s of training (20 epochs); 12 epochs 99.50 %; with
# rotations (10°) and scalings (0.1) too, 12 epochs 99.41 %; BatchNorm but the old global
# dropout 0.2 (on conv outputs too) 99.35 %; the previous recipe (no BatchNorm, no shifts,
# dropout 0.2, 10 epochs) 99.32 %.
CNN_RECIPE = {
    "layers": "conv16k5p2,bn,pool2,conv32k5p2,bn,pool2,128,bn,drop0.3",
    "epochs": 20,
    "batch_size": 128,
    "lr": 2e-3,
    "optimizer": "adam",
    "schedule": "cosine",
    "dropout": 0.0,  # the layers' own Dropout, before the output layer, instead
    "augment": 2,  # random shifts of up to 2 pixels
}
MODELS_DIR = Path("models")  #: where `train` saves by default, relative to the current folder
DATASET_NAMES = ("mnist", "fashion-mnist", "quickdraw")
OPTIMIZER_NAMES = ("sgd", "momentum", "adam")
SCHEDULE_NAMES = ("constant", "cosine", "step")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".pgm",
                  ".ppm", ".pbm")
# Recipe keys added after models were first saved with their recipe: a recipe saved without
# one had it at this value (for the "same recipe replaces the model" rule).
_LATER_KEYS = {"augment": 0, "rotate": 0.0, "scale": 0.0}
# The images of every dataset here are 28x28: the largest shift that leaves a pixel.
_IMAGE_SIDE = 28
# Options whose value cannot change the numbers a training run produces; --resume accepts
# new values for these (and for --epochs, which extends or shortens the run).
_RESUMABLE_CHANGES = ("epochs",)

CHECKPOINT_FORMAT = "fastmlp.checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_FILE = "checkpoint.json"


def default_model_path(dataset="mnist", model="mlp"):
    """``models/<dataset>.npz`` (``models/<dataset>-cnn.npz`` for ``--model cnn``) under the
    current folder: where ``train`` saves by default."""
    return MODELS_DIR / (f"{dataset}.npz" if model == "mlp" else f"{dataset}-{model}.npz")


class CLIError(Exception):
    """A user-facing failure: printed as one ``fastmlp: error:`` line, exit status 2."""


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``fastmlp: error: ...``) instead of usage + exit."""

    def error(self, message):
        raise _UsageError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------- argument types


# Shared with `fastmlp bench` (which cannot import this module: cli imports bench).
from ._args import _integer, _nonnegative_int, _number, _port, _positive_int  # noqa: E402,F401


def _hidden(text):
    """``512,256`` -> [512, 256]; ``none`` or an empty string -> [] (no hidden layer). The
    widths follow ``--layers``' grammar (:func:`fastmlp.layers.parse`): ASCII digits."""
    if text.strip().lower() in ("", "none"):
        return []
    from .layers import parse

    sizes = []
    for part in text.split(","):
        try:
            (size,) = parse(part)
            problem = None if isinstance(size, int) and size >= 1 else "not a positive integer"
        except ValueError as exc:
            problem = ("a number of more than 20 digits" if "20 digits" in str(exc) else
                       "not a positive integer (digits 0-9)")
        if problem:
            part = part.strip()
            shown = repr(part) if len(part) <= 40 else \
                repr(part[:24] + "...") + f" ({len(part):,} characters)"
            raise argparse.ArgumentTypeError(
                f"expected comma-separated positive layer sizes like 512,256; {shown} is "
                f"{problem}")
        sizes.append(size)
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
    parser.commands = sub.choices  # name -> subparser, for error messages

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
    g.add_argument("--model", choices=("mlp", "cnn"), default=None,
                   help="mlp: dense layers (--hidden); cnn: a convolutional network (--layers) "
                        "with its own defaults: " + _wrap_options(
                            _recipe_text({**DEFAULT_RECIPE, **CNN_RECIPE, "model": "cnn"}),
                            60).strip() + f" (default: {r['model']})")
    g.add_argument("--layers", type=_layers, default=None, metavar="SPEC",
                   help="the layers between the 1x28x28 input and the output, "
                        "comma-separated: convFkK[sS][pP] (F filters, KxK kernel, stride S, "
                        "padding P), poolK[sS] / avgK[sS] (KxK max / average pooling), bn "
                        "(batch normalisation of the layer before), dropP (dropout, rate P), "
                        "or a dense width; --model mlp takes widths, bn and dropP (instead "
                        f"of --hidden) (default: {CNN_RECIPE['layers']} for --model cnn)")
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
    g.add_argument("--augment", type=_integer(0, _IMAGE_SIDE,
                                              f"a number of pixels 0..{_IMAGE_SIDE}"),
                   default=None, metavar="N",
                   help="data augmentation: shift each training image by a random whole "
                        "number of pixels, up to N each way (default: "
                        f"{_or_none(r['augment'])})")
    g.add_argument("--rotate", type=_number(0, 180), default=None, metavar="DEG",
                   help="data augmentation: rotate each training image by a random angle of "
                        f"up to DEG degrees either way (default: {_or_none(r['rotate'])})")
    g.add_argument("--scale", type=_number(0, 1, high_open=True), default=None, metavar="F",
                   help="data augmentation: scale each training image by a random factor in "
                        f"1-F .. 1+F (default: {_or_none(r['scale'])})")
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
    g.add_argument("--force", action="store_true",
                   help="without --out: replace models/<dataset>.npz even if it was trained "
                        "with other settings (by default only the same recipe replaces it)")
    g.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar and no per-epoch lines")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate", help="test accuracy of a saved model, per class",
        description="Accuracy, loss and per-class accuracy of a saved model on a test set. "
                    "The dataset defaults to the one the model was trained on (read from "
                    "its .history.json), else mnist.")
    e.add_argument("model", type=Path, nargs="?", default=None, metavar="MODEL",
                   help="a model saved by fastmlp train (default: models/<dataset>.npz, "
                        f"{default_model_path()} without --dataset, as fastmlp train saves)")
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
    p.add_argument("model", type=Path, nargs="?", default=None, metavar="MODEL",
                   help="a .npz model saved by fastmlp train (default: "
                        f"{default_model_path()}); a first FILE that is not .npz is a FILE")
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

    x = sub.add_parser(
        "export", help="write a model as ONNX or as a static web page",
        description="Export a saved model: --onnx FILE writes an ONNX graph whose output is "
                    "the model's probabilities (needs pip install 'fastmlp[onnx]'); --web DIR "
                    "writes a static draw-a-digit site (index.html, app.js, style.css, "
                    "model.json, model.bin) that runs the network in the browser.")
    x.add_argument("model", type=Path, metavar="MODEL", help="a model saved by fastmlp train")
    x.add_argument("--onnx", type=Path, default=None, metavar="FILE", help="ONNX file to write")
    x.add_argument("--web", type=Path, default=None, metavar="DIR",
                   help="folder to write the static site into (created if needed)")
    x.set_defaults(func=cmd_export)

    # `fastmlp bench ...` is dispatched in main() before parsing; listed here for --help.
    b = sub.add_parser("bench", help="benchmarks (options: fastmlp bench --help)",
                       add_help=False)
    b.add_argument("args", nargs=argparse.REMAINDER)
    b.set_defaults(func=lambda args: _bench(args.args))
    return parser


def _or_none(value):
    return f"{value:g}" if value else "none"


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
    network = (f"--model cnn --layers {recipe['layers']}" if recipe.get("model") == "cnn"
               else f"--layers {recipe['layers']}" if recipe.get("layers") is not None
               else f"--hidden {hidden}")
    text = (f"--dataset {recipe['dataset']} {network} --activation "
            f"{recipe['activation']} --optimizer {recipe['optimizer']} --lr {recipe['lr']:g} "
            f"--schedule {recipe['schedule']} --batch-size {recipe['batch_size']} "
            f"--epochs {recipe['epochs']} --seed {recipe['seed']}")
    if recipe["optimizer"] == "momentum":
        text += f" --momentum {recipe['momentum']:g}" + (" --nesterov" if recipe["nesterov"]
                                                         else "")
    for key in ("l2", "dropout", "augment", "rotate", "scale", "validation_split"):
        if recipe[key]:
            text += f" --{key.replace('_', '-')} {recipe[key]:g}"
    if recipe["early_stopping"]:
        text += f" --early-stopping {recipe['early_stopping']}"
    return text


# ------------------------------------------------------------------------------- main


def main(argv=None):
    """Run the command line; returns the exit status (0 ok, 2 error, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    guard = sys.stdout = _StdoutGuard(sys.stdout)
    try:
        return _main(argv)
    finally:
        if sys.stdout is guard:
            sys.stdout = guard.stream


def _main(argv):
    try:
        if argv and argv[0] == "bench":
            return _bench(argv[1:])
        parser = build_parser()
        try:
            args, extras = parser.parse_known_args(argv)
        except SystemExit as exc:  # --help, --version
            return exc.code if isinstance(exc.code, int) else 0
        if extras:
            raise _UsageError(_unrecognized(parser, args, extras))
        if args.command is None:
            raise _UsageError("missing command: choose one of train, evaluate, predict, export, "
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
        if exc.strerror:  # OSError(errno, message): the message, not "[Errno 98] ..."
            return _fail(exc.strerror)
        return _fail(str(exc) or type(exc).__name__)
    except (ValueError, ImportError, FloatingPointError) as exc:
        return _fail(str(exc) or type(exc).__name__)


class _StdoutGuard:
    """sys.stdout while a command runs. When the reader of a pipe goes away (``fastmlp
    train | head -1``), printing raises BrokenPipeError; a training run must still save its
    model, so from then on output is dropped instead of aborting the command."""

    def __init__(self, stream):
        self.stream = stream
        self.broken = False

    def _broke(self):
        self.broken = True
        try:  # silence the interpreter's final flush of the real stdout as well
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
        except (OSError, ValueError, AttributeError):
            pass

    def write(self, text):
        if self.broken:
            return len(text)
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self._broke()
            return len(text)

    def flush(self):
        if self.broken:
            return
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._broke()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _unrecognized(parser, args, extras):
    """One line for unknown options: the closest known option of that command, if any, and
    that command's own --help."""
    command = getattr(args, "command", None)
    sub = parser.commands.get(command) if command else None
    return _unrecognized_in(sub or parser, extras)


def _unrecognized_in(target, extras):
    """:func:`_unrecognized` for the parser ``target`` (a command's, or bench's own)."""
    import difflib

    known = [o for a in target._actions for o in a.option_strings
             if a.help is not argparse.SUPPRESS]
    for extra in extras:
        flag = extra.split("=", 1)[0]
        if flag.startswith("-"):
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
            if close:
                return (f"unrecognized arguments: {' '.join(extras)}; did you mean "
                        f"{close[0]}? (see '{target.prog} --help')")
    return f"unrecognized arguments: {' '.join(extras)} (see '{target.prog} --help')"


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
        from ._hints import install_hint

        raise ImportError(f"fastmlp bench needs {exc.name}: "
                          f"{install_hint('bench', exc.name)}") from None
    if not hasattr(bench, "build_parser"):  # a bench of its own parsing: its own errors
        try:
            status = bench.main(list(argv))
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) or exc.code is None else 2
        return 0 if status is None else int(status)
    # One-line errors (bench's own parser prints its whole usage), with the suggestion for
    # a misspelled option that every other command gives.
    check = bench.build_parser()

    def error(message, prog=check.prog):
        raise _UsageError(f"{message} (see '{prog} --help')")

    check.error = error
    try:
        _, extras = check.parse_known_args(list(argv))
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    if extras:
        raise _UsageError(_unrecognized_in(check, extras))
    status = bench.main(list(argv), parser=check)
    return 0 if status is None else int(status)


# ------------------------------------------------------------------------------ train


def _resolve_recipe(args):
    """DEFAULT_RECIPE (with CNN_RECIPE for --model cnn) overridden by every option given on
    the command line."""
    return _recipe_with(_explicit(args))


def _recipe_with(options):
    recipe = dict(DEFAULT_RECIPE)
    if options.get("model") == "cnn":
        recipe.update(CNN_RECIPE)
    recipe.update(options)
    return recipe


def _layers(text):
    """``--layers``: checked with the layer specs' own parser (the geometry is checked once
    the network is built, against the real input)."""
    from .layers import parse

    try:
        parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _network_spec(recipe, n_features, n_classes):
    """``(layer list, activations)`` for Network from a recipe. An MLP takes its input as
    an image shape when it trains with augmentation (which moves images); its hidden layers
    are ``--hidden``'s widths, or ``--layers`` (widths, ``bn``, ``dropP``)."""
    from .layers import Conv2D, parse

    side = int(round(n_features ** 0.5))  # every dataset here is square 28x28 images
    image = recipe["model"] == "cnn" or _augmentation(recipe)
    hidden = recipe["hidden"] if recipe["layers"] is None else parse(recipe["layers"])
    specs = [(1, side, side) if image else n_features, *hidden, n_classes]
    # one activation per layer with weights: convolutions and dense widths
    n_hidden = sum(isinstance(s, (Conv2D, int)) for s in specs[1:-1])
    return specs, [recipe["activation"]] * n_hidden + ["softmax"]


def _image_layers(layers):
    """The tokens of a ``--layers`` text that need ``--model cnn`` (conv, pooling)."""
    from .layers import IMAGE_LAYERS, parse

    return [token.strip() for token, spec in zip(layers.split(","), parse(layers))
            if isinstance(spec, IMAGE_LAYERS)]


def _augmentation(recipe):
    """``Network.fit``'s ``augment`` for a recipe: None when off."""
    if not (recipe["augment"] or recipe["rotate"] or recipe["scale"]):
        return None
    return {"shift": recipe["augment"], "rotate": recipe["rotate"], "scale": recipe["scale"]}


def _describe_augmentation(recipe):
    """``, augment shift 2 rotate 10 scale 0.1`` (the parts that are on), or nothing."""
    parts = [f"{name} {recipe[key]:g}" for name, key in
             (("shift", "augment"), ("rotate", "rotate"), ("scale", "scale")) if recipe[key]]
    return ", augment " + " ".join(parts) if parts else ""


def _architecture(net):
    """``784-128-10`` for a plain MLP, else the layer list (a CNN, or a network with
    BatchNorm or Dropout layers: ``784, 128, BatchNorm(), Dropout(0.2), 10``)."""
    if net.is_mlp:
        return "-".join(map(str, net.layer_sizes))
    return ", ".join(str(s) for s in net.layers)


def _describe_network(recipe, sizes):
    return recipe["layers"] if recipe["layers"] is not None else "-".join(map(str, sizes))


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
    if recipe["model"] == "mlp" and recipe["layers"] is not None:
        if _image_layers(recipe["layers"]):
            raise CLIError(f"--layers {', '.join(_image_layers(recipe['layers']))}: "
                           "convolution and pooling need --model cnn (an MLP's --layers are "
                           "dense widths, bn and dropP)")
        if recipe["hidden"] != DEFAULT_RECIPE["hidden"]:
            raise CLIError("give --hidden or --layers, not both (--layers also spells an "
                           "MLP's layers: widths, bn, dropP)")
    if recipe["layers"] is not None:
        # The geometry, before any data loads (every dataset here is 28x28 images; the
        # output width does not change what fits).
        from .layers import plan

        try:
            plan(_network_spec(recipe, _IMAGE_SIDE ** 2, 2)[0])
        except ValueError as exc:
            raise CLIError(f"--layers {recipe['layers']}: {exc}") from None
    if recipe["model"] == "cnn" and recipe["hidden"] != DEFAULT_RECIPE["hidden"]:
        raise CLIError("--hidden is for --model mlp; a CNN's dense layers go in --layers, "
                       "e.g. --layers conv16k5p2,pool2,128")


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
    _check_memory(recipe)
    out = args.out if args.out is not None else default_model_path(recipe["dataset"],
                                                                    recipe["model"])
    # Every file this run will write is checked now, not after training: the model, its
    # history beside it, the checkpoint folder's files and the plots.
    _check_outputs(out, args.checkpoint, args.plot)
    if args.out is None and not args.force:
        _check_default_output(out, recipe)
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
    specs, activations = _network_spec(recipe, X_train.shape[1], n_classes)
    try:
        net = Network(specs, activations, seed=recipe["seed"])
    except ValueError as exc:
        raise CLIError(f"--layers {recipe['layers']}: {exc}") from None
    sizes = net.layer_sizes
    done = 0
    total = recipe["epochs"]
    if found is not None:
        done = checkpoint.restore(found, net)

    header = (f"fastmlp: {_describe_network(recipe, sizes)} {recipe['activation']}, "
              f"{recipe['optimizer']} lr {recipe['lr']:g} ({recipe['schedule']}), batch "
              f"{recipe['batch_size']}{_describe_augmentation(recipe)}, "
              f"{_plural(total, 'epoch')} on {len(y_fit)} "
              f"{recipe['dataset']} images"
              + (f" (+{len(validation[1])} for validation)" if validation else "")
              + f", {_plural(_threads_in_use(), 'thread')}")
    _note(args, header)
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
                    early_stopping=recipe["early_stopping"] or 0, callback=callback,
                    augment=_augmentation(recipe))
        except KeyboardInterrupt:
            where = ""
            if checkpoint is not None and checkpoint.epoch:
                where = (f"; the checkpoint of epoch {checkpoint.epoch} is in "
                         f"{args.checkpoint} (add --resume to continue)")
            print(f"\nfastmlp: interrupted after {_plural(net.history.epochs, 'epoch')}; "
                  f"model not saved{where}", file=sys.stderr)
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
    # The epochs' own seconds (History.seconds, this run's epochs) are the training time;
    # everything else -- loading the data, compiling the kernels on a first run (or loading
    # them from numba's cache), evaluating -- is the rest of the wall time.
    epoch_seconds = float(sum(net.history.seconds[done:]))
    print(_time_line(epoch_seconds, net.history.epochs - done, wall - epoch_seconds,
                     fit_seconds - epoch_seconds))

    run = {
        "dataset": recipe["dataset"],
        "classes": names,
        "recipe": recipe,
        "test_loss": scores["loss"],
        "test_accuracy": scores["accuracy"],
        "train_seconds": epoch_seconds,  # this run's epochs (History.seconds)
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


def _time_line(epoch_seconds, epochs, rest, compile_seconds):
    """``time: 34.1 s training (10 epochs), 236.8 s start-up and evaluation (...)``: the
    epochs' own seconds, then the rest of the wall time; what the rest was mostly spent on
    is named when fit's own overhead (compiling the kernels on a first run) dominates it."""
    what = ("mostly compiling the kernels: first run, cached after" if compile_seconds > 10
            and compile_seconds > rest / 2 else "loading data, loading the compiled kernels, "
            "evaluating")
    def sec(x):  # 0.04 s, not 0.0 s
        return f"{x:.1f}" if x >= 1 else f"{x:.2f}"

    return (f"time: {sec(epoch_seconds)} s training ({_plural(epochs, 'epoch')}), "
            f"{sec(rest)} s start-up and evaluation ({what})")


def _check_outputs(out, checkpoint=None, plots=None):
    """Refuse (CLIError) any path this training run would write, before the first epoch, by
    the rules a save applies (:func:`fastmlp.io.check_save_target`): a FIFO, device, socket
    or folder where a file goes, a folder that cannot be made or written. The paths: the
    model, its history beside it, the checkpoint folder's record and epoch files, the plots."""
    import re

    from .io import check_save_target

    out = Path(out)
    targets = [out, history_path(out)]
    folders = [out.parent]
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        folders.append(checkpoint)
        targets.append(checkpoint / CHECKPOINT_FILE)
        if checkpoint.is_dir():  # the epoch files that a save replaces or deletes
            targets += [checkpoint / name for name in sorted(os.listdir(checkpoint))
                        if re.fullmatch(r"epoch-[0-9]+\.(model|state)\.npz", name)]
    if plots is not None:
        from .plots import FILES

        folders.append(Path(plots))
        targets += [Path(plots) / name for name in FILES.values()]
    for folder in folders:
        _check_output_folder(folder)
    for target in targets:
        try:
            check_save_target(target)
        except ValueError as exc:
            raise CLIError(f"{exc} (checked before training, so that no work is lost)"
                           ) from None


def _check_output_folder(folder):
    """The folder exists or can be made (its nearest existing ancestor is a folder), and
    that folder is writable."""
    folder = Path(folder)
    where = folder
    while True:
        try:
            mode = os.stat(where).st_mode
            break
        except (FileNotFoundError, NotADirectoryError):  # to be made: look further up
            if where.parent == where:
                return
            where = where.parent
        except OSError as exc:
            raise CLIError(f"cannot save into {folder}: {where}: {exc.strerror}") from None
    if not stat.S_ISDIR(mode):
        raise CLIError(f"cannot save into {folder}: {where} is not a folder")
    if not os.access(where, os.W_OK | os.X_OK):
        raise CLIError(f"cannot save into {folder}: {where} is not writable")


def _plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def _format_bytes(n):
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.3g} EB"  # pragma: no cover


def _check_memory(recipe):
    """Refuse layer sizes whose parameters alone would not fit in this machine's memory,
    saying how much they would need (instead of an OverflowError or MemoryError later).
    (A CNN's --layers are checked by Network itself, which also says what it would need.)"""
    if recipe["model"] == "cnn":
        return
    n_out = len(recipe["categories"]) if recipe["dataset"] == "quickdraw" else 10
    sizes = [784, *recipe["hidden"], n_out]
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    # float32 parameters and their gradients, plus the optimizer's two state vectors
    # (momentum keeps one, Adam two); activations of one batch are small beside them.
    copies = 2 + {"sgd": 0, "momentum": 1, "adam": 2}.get(recipe["optimizer"], 2)
    need = 4 * params * copies + 4 * recipe["batch_size"] * sum(sizes) * 3
    from ._compiled import physical_memory

    have = physical_memory()
    if need > have:
        hidden = ",".join(map(str, recipe["hidden"]))
        raise CLIError(f"--hidden {hidden}: a {'-'.join(map(str, sizes))} network has "
                       f"{params:,} parameters; training it needs about {_format_bytes(need)} "
                       f"of memory and this machine has {_format_bytes(have)}")


def _check_default_output(out, recipe):
    """Without --out, replace models/<dataset>.npz only with a model of the same recipe
    (re-running the same command); another recipe must not silently replace it."""
    out = Path(out)
    if not out.exists():
        return
    from .io import json_default

    saved = _sidecar(out).get("recipe")
    current = json.loads(json.dumps(recipe, default=json_default))
    if isinstance(saved, dict):
        saved = {**_LATER_KEYS, **saved}
    if isinstance(saved, dict) and {k: saved.get(k) for k in current} == current:
        return
    if isinstance(saved, dict):
        changed = [k for k in current if saved.get(k) != current[k]]
        what = "other settings (" + ", ".join(
            f"--{k.replace('_', '-')} {_show(saved.get(k))} there, {_show(current[k])} now"
            for k in changed[:3]) + ")"
    else:
        what = "unknown settings"
    raise CLIError(f"{out} already holds a model trained with {what}; pass --out FILE to "
                   "save this one elsewhere, or --force to replace it")


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
    from .io import atomic_write, json_default

    text = json.dumps(data, indent=1, default=json_default)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


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
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise CLIError(f"{path} is not a readable checkpoint: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
            raise CLIError(f"{path} is not a fastmlp checkpoint")
        if data.get("version") != CHECKPOINT_VERSION:
            raise CLIError(f"{path} has checkpoint version {data.get('version')!r}; this "
                           f"fastmlp reads version {CHECKPOINT_VERSION}")
        for key in ("epoch", "config", "model", "state", "training_state"):
            if key not in data:
                raise CLIError(f"{path} is not a valid checkpoint: no {key!r}")
        problem = _checkpoint_problem(data)
        if problem:
            raise CLIError(f"{path} is not a valid checkpoint: {problem}")
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
        from .io import check_readable_file, check_training_state, read_npz

        state_path = self.folder / data["state"]
        n_params = sum(w.size + b.size for w, b in zip(net.weights, net.biases))
        limit = 8 * n_params + 16384  # float64 parameters and an .npy header, at most
        try:
            check_readable_file(state_path, "checkpoint file")
            # the zip directory and each .npy header first: a damaged file costs nothing
            arrays = read_npz(state_path, lambda name: limit if name == "best" or
                              name.startswith("opt.") else None, "checkpoint state")
        except FileNotFoundError as exc:
            raise CLIError(str(exc)) from None
        except ValueError as exc:
            raise CLIError(f"{exc} (truncated or corrupt?)" if "corrupt" not in str(exc)
                           else str(exc)) from None
        state = _join_training_state(data["training_state"], arrays)
        try:
            check_training_state(state, n_params, net.dtype)
            net.set_training_state(state)
        except (KeyError, TypeError, ValueError) as exc:
            raise CLIError(f"{self.folder}: {exc}") from None
        return data["epoch"]


_MAX_COUNT = 2**53  # counts in checkpoint.json (epochs, steps): exact in JSON and float64
_MAX_WIDTH = 2**31 - 1  # the largest layer integer (fastmlp.layers._int's bound)


def _count(v, low=1):
    return _is_int(v) and low <= v <= _MAX_COUNT


_CONFIG_TYPES = {  # checkpoint.json "config": what each recipe value must be
    "dataset": lambda v: v in DATASET_NAMES,
    "categories": lambda v: v is None or (isinstance(v, list) and all(
        isinstance(c, str) for c in v)),
    "model": lambda v: v in ("mlp", "cnn"),
    "layers": lambda v: v is None or isinstance(v, str),
    "hidden": lambda v: isinstance(v, list) and all(
        _is_int(n) and 1 <= n <= _MAX_WIDTH for n in v),
    "activation": lambda v: isinstance(v, str),
    "epochs": _count,
    "batch_size": _count,
    "lr": lambda v: _is_number(v) and v > 0,
    "optimizer": lambda v: v in OPTIMIZER_NAMES,
    "momentum": lambda v: _is_number(v) and 0 <= v < 1,
    "nesterov": lambda v: isinstance(v, bool),
    "schedule": lambda v: v in SCHEDULE_NAMES,
    "l2": lambda v: _is_number(v) and v >= 0,
    "dropout": lambda v: _is_number(v) and 0 <= v < 1,
    "augment": lambda v: _is_int(v) and 0 <= v <= _IMAGE_SIDE,
    "rotate": lambda v: _is_number(v) and 0 <= v <= 180,
    "scale": lambda v: _is_number(v) and 0 <= v < 1,
    "validation_split": lambda v: _is_number(v) and 0 <= v < 1,
    "early_stopping": lambda v: v is None or _count(v),
    "seed": lambda v: _is_int(v) and v >= 0,
    "limit": lambda v: v is None or _count(v),
}


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _checkpoint_problem(data):
    """What is wrong with a checkpoint.json record (its schema: types, ranges, the settings
    fitting together), or None. The arrays it names are checked when they are read
    (:meth:`_Checkpoints.restore`, :func:`fastmlp.io.check_training_state`)."""
    import re

    if not _count(data["epoch"]):
        return f"epoch {data['epoch']!r:.40} is not a positive integer (at most 2**53)"
    config = data["config"]
    if not isinstance(config, dict):
        return f"config is a {type(config).__name__}, not an object"
    for key, ok in _CONFIG_TYPES.items():
        if key in config:
            try:
                good = ok(config[key])
            except TypeError:  # unhashable value tested against a tuple of names
                good = False
            if not good:
                return f"config {key} is {json.dumps(config[key])[:60]}"
    model, layers = config.get("model", DEFAULT_RECIPE["model"]), config.get("layers")
    if model == "cnn":
        if layers is None:
            return "config layers is null, but model cnn needs its layers (--layers)"
        from .layers import parse

        try:
            parse(layers)
        except ValueError as exc:
            return f"config layers: {exc}"
    elif layers is not None:
        try:
            if _image_layers(layers):
                return (f"config layers is {json.dumps(layers)[:60]}, but model {model} "
                        "takes no convolution or pooling")
        except ValueError as exc:
            return f"config layers: {exc}"
    for key, kind in (("model", "model"), ("state", "state")):
        name = data[key]
        # plain file names inside the folder only: never a path that leads elsewhere
        if not isinstance(name, str) or not re.fullmatch(rf"epoch-[0-9]{{4,9}}\.{kind}\.npz",
                                                          name):
            return f"{key} {json.dumps(name)[:60]} is not an epoch-NNNN.{kind}.npz file name"
    info = data["training_state"]
    if not isinstance(info, dict):
        return "training_state is not an object"
    for key in ("optimizer", "rng", "dropout_key", "scalars"):
        if key not in info:
            return f"training_state has no {key!r}"
    if info["optimizer"] is not None and info["optimizer"] not in OPTIMIZER_NAMES:
        return f"training_state optimizer {json.dumps(info['optimizer'])[:40]} is not one of " \
               f"{', '.join(OPTIMIZER_NAMES)}"
    scalars = info["scalars"]
    if not isinstance(scalars, dict) or not all(_is_number(v) for v in scalars.values()):
        return "training_state scalars must be an object of numbers"
    if info["optimizer"] is not None and "step" not in scalars:
        return "training_state scalars has no 'step' (the optimizer's update count)"
    if "step" in scalars and not _count(scalars["step"], 0):
        return f"training_state step {json.dumps(scalars['step'])[:40]} is not an integer in " \
               "0 .. 2**53"
    best = info.get("early_stopping")
    if best is not None:
        if not isinstance(best, dict) or "since_best" not in best or "best_loss" not in best:
            return "training_state early_stopping must be null or an object with " \
                   "since_best and best_loss"
        if best["best_loss"] is not None and not _is_number(best["best_loss"]):
            return f"early_stopping best_loss {json.dumps(best['best_loss'])[:40]} is not a number"
        if not _count(best["since_best"], 0):
            return f"early_stopping since_best {json.dumps(best['since_best'])[:40]} is not " \
                   "an integer in 0 .. 2**53"
    return None


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
    """The ``run`` record that ``train`` wrote beside a model, or {}. Only fields of the
    right type are kept (a damaged or hand-edited file is ignored, never a crash)."""
    from .history import read_history_json

    try:
        data = read_history_json(model_path)
    except (OSError, ValueError, RecursionError):
        return {}
    run = data.get("run", {}) if isinstance(data, dict) else {}
    if not isinstance(run, dict):
        return {}
    clean = {}
    if run.get("dataset") in DATASET_NAMES:
        clean["dataset"] = run["dataset"]
    classes = run.get("classes")
    if isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes):
        clean["classes"] = classes
    if isinstance(run.get("recipe"), dict):
        clean["recipe"] = run["recipe"]
    return clean


def _load_model(path):
    from .network import Network

    from .io import check_readable_file

    path = Path(path)
    try:
        check_readable_file(path, "model file")
    except FileNotFoundError as exc:
        raise CLIError(f"{exc} (train one with 'fastmlp train')") from None
    return Network.load(path)


def cmd_evaluate(args):
    import numpy as np

    from .plots import confusion_matrix

    if args.plot is not None:
        from .plots import require_matplotlib

        require_matplotlib()
    if args.model is None:
        args.model = default_model_path(args.dataset or "mnist")
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
    if net.input_shape not in (None, (1, 28, 28)):
        raise CLIError(f"{args.model} takes {net.input_shape} images; the datasets here are "
                       "1x28x28")
    if net.n_inputs != X.shape[1] or net.n_outputs != n_classes:
        raise CLIError(f"{args.model} takes {net.n_inputs} inputs and has {net.n_outputs} "
                       f"outputs; {dataset} has {X.shape[1]} pixels and {n_classes} classes")
    names = _class_names(dataset, categories, n_classes)
    scores = net.evaluate(X, y)
    proba = net.predict_proba(X)
    pred = proba.argmax(axis=1)
    matrix = confusion_matrix(y, pred, n_classes)
    print(f"model     {args.model}  ({_architecture(net)})")
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

    from .io import check_readable_file

    path = Path(path)
    try:
        check_readable_file(path, "file")  # a FIFO would block forever
    except FileNotFoundError:
        raise CLIError(f"no such file: {path} (it does not exist)") from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if path.suffix.lower() == ".npy":
        _check_npy_header(path)
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError, MemoryError) as exc:
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


def _check_npy_header(path):
    """The shape and dtype an .npy file claims must fit in the bytes it has (a header saying
    (10**12, 784) must not make numpy try to allocate it)."""
    import numpy as np

    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(f)
            offset = f.tell()
    except ValueError as exc:
        text = str(exc)
        if "max_header_size" in text or "Header info length" in text:
            raise CLIError(f"{path} has an .npy header larger than numpy reads safely "
                           "(corrupt or hostile file)") from None
        raise CLIError(f"{path} is not a readable .npy array: {text}") from None
    except (OSError, EOFError) as exc:
        raise CLIError(f"{path} is not a readable .npy array: {exc}") from None
    if dtype.hasobject:
        raise CLIError(f"{path} holds Python objects, not numbers (fastmlp never unpickles)")
    count = 1
    for n in shape:
        count *= int(n)
    need, have = count * dtype.itemsize, path.stat().st_size - offset
    if need > have:
        raise CLIError(f"{path} claims shape {tuple(shape)} of {dtype} ({need:,} bytes) but "
                       f"holds only {have:,} bytes: truncated or corrupt")


def cmd_predict(args):
    import numpy as np

    if args.model is not None and args.model.suffix.lower() != ".npz":
        # `fastmlp predict digit.png ...`: no model named, so every path is an input
        args.files, args.model = [args.model, *args.files], None
    if args.model is None:
        args.model = default_model_path()
    net = _load_model(args.model)
    run = _sidecar(args.model)
    names = run.get("classes")
    if not isinstance(names, list) or len(names) != net.n_outputs:
        names = [str(i) for i in range(net.n_outputs)]
    if net.n_inputs != 784 or net.input_shape not in (None, (1, 28, 28)):
        raise CLIError(f"{args.model} takes {net.input_shape or net.n_inputs} inputs; predict "
                       "feeds 28x28 = 784 (1x28x28 images)")
    # One bad file is reported (one line each) and the rest are still predicted; the exit
    # status is 2 if any file failed.
    samples, failed = [], 0
    for f in args.files:
        try:
            samples.extend(_read_inputs(f))
        except (CLIError, ImportError) as exc:
            if isinstance(exc, ImportError):
                raise
            failed += 1
            _fail(str(exc))
    if not samples:
        if failed:
            return 2
        raise CLIError("the files hold no samples")
    X = np.stack([row for _, row in samples])
    proba = net.predict_proba(X)
    top = min(args.top, net.n_outputs)
    for (label, _), p in zip(samples, proba):
        best = np.argsort(-p, kind="stable")[:top]
        ranked = ", ".join(f"{names[k]} {100 * p[k]:.2f}%" for k in best)
        print(f"{label}: {names[best[0]]}  ({ranked})")
    return 2 if failed else 0


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
        from . import _threads

        layer = _threads.use_safe_threading_layer()
        print(f"threads     {numba.get_num_threads()} in use, {numba.config.NUMBA_NUM_THREADS} "
              f"at most (NUMBA_NUM_THREADS; {os.cpu_count()} CPUs); numba threading layer "
              f"{layer}")
        print(f"numba cache {_numba_cache_dir()}")
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
    for line in _model_lines(MODELS_DIR):
        print(line)
    return 0


def _model_lines(folder):
    """Lines listing every ``.npz`` model in ``folder``: name, size and architecture, read
    from each file's header alone (no network is built, no weights are read)."""
    from .io import read_header

    folder = Path(folder)
    try:
        paths = sorted(p for p in folder.iterdir() if p.name.endswith(".npz"))
    except OSError:  # no such folder, or not one
        paths = []
    if not paths:
        return [f"models      none in {folder}{os.sep} yet (fastmlp train)"]
    lines = [f"models      {len(paths)} in {folder}{os.sep}"]
    width = max(len(p.name) for p in paths)
    for path in paths:
        try:
            header = read_header(path)
            size = _format_bytes(path.stat().st_size)
            what = _header_architecture(header)
        except (OSError, ValueError) as exc:
            size, what = "", str(exc)
            if what.startswith(str(path)):
                what = what[len(str(path)):].lstrip(":, ")
            what = "not readable: " + what
        lines.append(f"  {path.name:<{width}}  {size:>8}  {what}")
    return lines


def _header_architecture(header):
    """A model header's layers as evaluate prints a network's (:func:`_architecture`)."""
    if "layers" in header:
        from .layers import from_json

        return ", ".join(str(s) for s in from_json(header["layers"]))
    return "-".join(map(str, header["layer_sizes"]))


def _numba_cache_dir():
    """Where the compiled kernels are cached (fastmlp.kernels._cache: one folder per hash of
    the kernel sources)."""
    from .kernels import _cache

    return f"{_cache.cache_folders()[0]} (one folder per version of the kernels' source)"


# ------------------------------------------------------------------------------ serve


def cmd_serve(args):
    model = args.model
    if model is None:
        model = default_model_path()
        if not model.is_file():
            raise CLIError(f"no model at {model}: run 'fastmlp train' first (or pass --model)")
    else:
        _load_model(model)  # missing, a folder, a link loop, corrupt: one line, before binding
    from .web.server import serve  # it loads the model (ValueError if bad) before binding

    serve(str(model), host=args.host, port=args.port)
    return 0


# ----------------------------------------------------------------------------- export


def cmd_export(args):
    if args.onnx is None and args.web is None:
        raise _UsageError("export needs --onnx FILE, --web DIR or both (see 'fastmlp export "
                          "--help')")
    from . import export

    if args.onnx is not None:
        export.require_onnx()  # before anything is written
    net = _load_model(args.model)
    if args.onnx is not None:
        path = export.to_onnx(net, args.onnx)
        print(f"fastmlp: wrote {path} ({_format_bytes(path.stat().st_size)})")
    if args.web is not None:
        sizes = export.to_web(net, args.web)
        print(f"fastmlp: wrote {args.web}/ ({_format_bytes(sum(sizes.values()))}: "
              f"{', '.join(sizes)}); serve it with: python3 -m http.server -d {args.web}")
    return 0

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
