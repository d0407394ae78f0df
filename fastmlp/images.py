"""Turn any picture of a digit into a 28x28 image the way MNIST's were made.

MNIST's digits were size-normalized to fit a 20x20 box (keeping the aspect ratio, anti-aliased)
and then placed in a 28x28 field so that their centre of mass sits at the centre. A network
trained on MNIST only recognises digits prepared the same way, so everything that feeds it
user images -- the web page, ``fastmlp predict`` -- goes through :func:`to_mnist`.

numpy only; :func:`load_image` needs Pillow (``pip install 'fastmlp[images]'``).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

__all__ = ["to_mnist", "load_image", "resize", "SIZE", "BOX"]

SIZE = 28  #: side of the output image
BOX = 20  #: the longer side of the digit's bounding box after scaling
CENTRE = 14.0  #: where the centre of mass goes (row, column), in pixel-index coordinates
INK_THRESHOLD = 0.05  #: ink level (after background removal) that counts for the bounding box
MAX_PIXELS = 64 * 1024 * 1024  #: larger images are refused before their pixels are decoded


def _as_unit_float(image) -> np.ndarray:
    """Validate and convert to float64 values in [0, 1]."""
    try:
        a = np.asarray(image)
    except Exception as exc:  # ragged nested lists and the like
        raise ValueError(f"image could not be read as an array: {exc}") from None
    if a.dtype == object or not (a.dtype == bool or np.issubdtype(a.dtype, np.number)):
        raise ValueError(f"image must hold numbers, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError("image must hold real numbers, got complex values")
    if a.ndim != 2:
        raise ValueError(
            f"image must be a 2-D grayscale array (height, width), got {a.ndim}-D shape {a.shape}"
        )
    if a.size == 0:
        raise ValueError(f"image is empty (shape {a.shape})")
    if a.dtype == bool:
        return a.astype(np.float64)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise ValueError(
                f"integer images must hold 0..255, got values from {lo} to {hi}"
            )
        return a.astype(np.float64) / 255.0
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ValueError(f"image contains {bad} NaN or infinite value(s)")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(
            f"float images must hold values in [0, 1], got values from {lo:g} to {hi:g} "
            "(divide 0..255 data by 255)"
        )
    return np.clip(a, 0.0, 1.0)


def _border(a: np.ndarray) -> np.ndarray:
    if a.shape[0] <= 2 or a.shape[1] <= 2:
        return a.ravel()
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def _resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix that resamples a 1-D signal; rows sum to 1.

    Shrinking averages the input over each output pixel's footprint (area averaging / box
    filter: the anti-aliasing MNIST used); enlarging interpolates linearly between pixel
    centres. Applied along both axes, ``R_rows @ image @ R_cols.T`` resizes an image.
    """
    if n_out == n_in:
        return np.eye(n_in)
    scale = n_out / n_in
    if scale < 1:
        # Output pixel i covers input interval [i / scale, (i + 1) / scale).
        edges = np.arange(n_out + 1) / scale
        lo, hi = edges[:-1, None], edges[1:, None]
        j = np.arange(n_in)[None, :]
        overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None)
    else:
        # Output pixel centre i + 0.5 maps to input coordinate (i + 0.5) / scale - 0.5.
        pos = (np.arange(n_out) + 0.5) / scale - 0.5
        pos = np.clip(pos, 0.0, n_in - 1)
        overlap = np.clip(1.0 - np.abs(pos[:, None] - np.arange(n_in)[None, :]), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def resize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D float array to ``shape`` (area averaging down, linear up)."""
    rows = _resample_matrix(a.shape[0], shape[0])
    cols = _resample_matrix(a.shape[1], shape[1])
    return rows @ a @ cols.T


def to_mnist(image) -> np.ndarray:
    """Prepare a picture of one digit like an MNIST image: float32 ``(28, 28)``, ink 1.

    ``image`` is a 2-D grayscale array of any size: integers 0..255 or floats 0..1. Dark ink
    on a light background is inverted automatically (decided from the median of the border
    pixels); the background level is subtracted and the contrast stretched so the darkest
    ink becomes 1. The digit is cropped to its ink's bounding box, scaled so its longer side
    is 20 px (aspect ratio kept, anti-aliased), and placed in the 28x28 field with its centre
    of mass at pixel (14, 14) -- shifted by whole pixels, never pushed off the edge.

    Raises ``ValueError`` for arrays that are not 2-D, are empty, hold NaN/inf or values
    out of range, or show no ink at all.
    """
    a = _as_unit_float(image)

    background = float(np.median(_border(a)))
    if background > 0.5:
        a = 1.0 - a
        background = 1.0 - background
    peak = float(a.max())
    if peak - background < 1e-3:
        raise ValueError(
            "image has no ink: it is one flat colour (nothing differs from the background)"
        )
    a = np.clip((a - background) / (peak - background), 0.0, 1.0)

    ink_rows = np.flatnonzero((a > INK_THRESHOLD).any(axis=1))
    ink_cols = np.flatnonzero((a > INK_THRESHOLD).any(axis=0))
    a = a[ink_rows[0] : ink_rows[-1] + 1, ink_cols[0] : ink_cols[-1] + 1]

    h, w = a.shape
    scale = BOX / max(h, w)
    nh = min(BOX, max(1, int(round(h * scale))))
    nw = min(BOX, max(1, int(round(w * scale))))
    digit = resize(a, (nh, nw))
    top = float(digit.max())
    if top <= 0:  # cannot happen after the crop, but never divide by zero
        raise ValueError("image has no ink left after resizing")
    digit /= top

    mass = digit.sum()
    cy = float((digit.sum(axis=1) * np.arange(nh)).sum() / mass)
    cx = float((digit.sum(axis=0) * np.arange(nw)).sum() / mass)
    row0 = int(np.clip(np.floor(CENTRE - cy + 0.5), 0, SIZE - nh))
    col0 = int(np.clip(np.floor(CENTRE - cx + 0.5), 0, SIZE - nw))

    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[row0 : row0 + nh, col0 : col0 + nw] = digit
    return out


def load_image(path) -> np.ndarray:
    """Read an image file as a 2-D float64 grayscale array in [0, 1] (needs Pillow).

    Colour is converted to luminance. Transparent pixels count as background: the image is
    composited over white when its visible pixels are mostly dark, over black otherwise, so
    both dark-on-transparent and light-on-transparent drawings survive. The result is not
    inverted or cropped -- pass it to :func:`to_mnist` for that.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        from ._hints import install_hint

        raise ImportError(
            f"reading image files needs Pillow: {install_hint('images', 'pillow')}") from None

    if isinstance(path, (str, os.PathLike)) and not os.path.exists(path):
        raise FileNotFoundError(f"no such image file: {os.fspath(path)!r}")
    try:
        with warnings.catch_warnings():
            # our own MAX_PIXELS check below replaces Pillow's bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            # Image.open reads only the header: refuse a decompression bomb before load()
            # allocates it (Pillow itself only warns below ~179 megapixels).
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ValueError(f"image is {w} x {h} pixels; at most {MAX_PIXELS:,} pixels "
                                 "are accepted (a digit needs far fewer)")
            img.load()
            has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
                img.mode == "P" and "transparency" in img.info
            )
            if has_alpha:
                la = np.asarray(img.convert("LA"), dtype=np.float64) / 255.0
                gray, alpha = la[..., 0], la[..., 1]
            else:
                if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                    arr = np.asarray(img, dtype=np.float64)
                    hi = float(arr.max()) if arr.size else 0.0
                    gray = arr / (65535.0 if hi > 255 else 255.0)
                else:
                    gray = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
                alpha = None
    except UnidentifiedImageError as exc:
        raise ValueError(f"not an image file Pillow can read: {exc}") from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image refused: {exc}") from None
    except (OSError, SyntaxError, EOFError) as exc:  # truncated or corrupt image data
        raise ValueError(f"image file is truncated or corrupt: {exc}") from None

    if gray.ndim != 2:  # multi-frame oddities
        raise ValueError(f"expected a single 2-D image, got shape {gray.shape}")
    if alpha is not None and alpha.min() < 1.0:
        visible = alpha > 0.5
        dark = visible.any() and float(gray[visible].mean()) < 0.5
        backdrop = 1.0 if dark else 0.0
        gray = alpha * gray + (1.0 - alpha) * backdrop
    return np.clip(gray, 0.0, 1.0)
