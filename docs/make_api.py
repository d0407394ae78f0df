"""Write docs/api.md, the API reference, from the docstrings (run from the repository root):

    python docs/make_api.py            # rewrite docs/api.md
    python docs/make_api.py --check    # exit 1 if docs/api.md is out of date

Public names are those in a module's ``__all__`` or, without one, those not starting with an
underscore that the module itself defines. Signatures come from ``inspect``.
"""

import argparse
import importlib
import inspect
import sys
from pathlib import Path

MODULES = ["fastmlp", "fastmlp.network", "fastmlp.layers", "fastmlp.io", "fastmlp.datasets", "fastmlp.images",
           "fastmlp.sklearn", "fastmlp.web.server"]
OUT = Path(__file__).resolve().parent / "api.md"


def public(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_")
                 and (inspect.isclass(v) or inspect.isfunction(v))
                 and getattr(v, "__module__", None) == module.__name__]
    return [n for n in names if hasattr(module, n)]


def signature(obj):
    """The call signature, without private parameters (those starting with an underscore:
    internal switches such as ``Network.fit(_l2_per_weight=...)`` are not API)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return ""
    params = [p for p in sig.parameters.values() if not p.name.startswith("_")]
    return str(sig.replace(parameters=params))


def method_of(value):
    """The function behind a class attribute that is a method: a plain function, a
    classmethod or staticmethod, or a conditional method such as scikit-learn's
    ``available_if`` (``partial_fit`` of the drop-ins), which wraps one in ``fn``; else None."""
    if isinstance(value, (classmethod, staticmethod)):
        value = value.__func__
    if inspect.isfunction(value):
        return value
    wrapped = getattr(value, "fn", None)
    if inspect.isfunction(wrapped) and hasattr(value, "__get__"):
        return wrapped
    return None


def doc(obj):
    return inspect.cleandoc(obj.__doc__) if obj.__doc__ else "(no docstring)"


def render_member(lines, name, obj, level):
    if inspect.isclass(obj):
        lines += [f"{'#' * level} class `{name}{signature(obj)}`", "", doc(obj), ""]
        for attr, value in vars(obj).items():
            if attr.startswith("_"):
                continue
            target = method_of(value)
            if target is not None:
                lines += [f"{'#' * (level + 1)} `{name}.{attr}{signature(target)}`", "",
                          doc(target), ""]
            elif isinstance(value, property):
                lines += [f"{'#' * (level + 1)} `{name}.{attr}` (property)", "", doc(value), ""]
    elif callable(obj):
        lines += [f"{'#' * level} `{name}{signature(obj)}`", "", doc(obj), ""]
    else:
        lines += [f"{'#' * level} `{name}`", "", f"`{obj!r}`"[:200], ""]


def render():
    lines = ["# API reference", "",
             "Generated from the docstrings by `python docs/make_api.py`; do not edit by hand.",
             ""]
    seen = set()
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a module this version does not have
        lines += [f"## `{name}`", "", doc(module), ""]
        for member in public(module):
            obj = getattr(module, member)
            key = (id(obj), member)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                if key in seen:  # re-exported: documented where it is defined
                    lines += [f"### `{member}`", "", f"See `{obj.__module__}.{member}`.", ""]
                    continue
                seen.add(key)
            render_member(lines, member, obj, 3)
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="fail if docs/api.md is out of date")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python docs/make_api.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
