"""One wording for "install this optional extra", in every message that needs one.

Standard library only (the CLI imports it before numpy)."""


def install_hint(extra, package):
    """``pip install 'fastmlp[plot]'`` for an installed fastmlp, the editable form for a
    source checkout (where ``fastmlp[plot]`` would fetch fastmlp itself from a package
    index), and the bare package for those who want only it."""
    return (f"pip install 'fastmlp[{extra}]' (from a checkout: pip install -e '.[{extra}]'; "
            f"or just pip install {package})")
