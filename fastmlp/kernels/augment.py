"""Data augmentation in the batch gather: ``X[rows]`` copied into the batch buffer, each image
row moved by its own random shift (and rotation and scaling), with no copy of the data set.

The math is :func:`fastmlp.reference.augment_batch`'s: output pixel ``p = (y, x)`` of an
image ``(C, H, W)`` reads the input at ``q = c + R(-θ) (p - c - d) / s`` (``c`` the image
centre, ``d = (dx, dy)`` an integer shift), bilinearly, 0 outside the image; every channel
gets the same map. With no rotation or scaling ``q = p - d``: the pixels are copied as they
are. Sample ``r`` of the batch at update ``step`` draws its parameters from dropout's hash
(:func:`.activations.dropout_uniform`, layer counter ``AUGMENT_LAYER``, columns 0..3), so
nothing is stored and both backends draw the same ones.

A network trained without augmentation has ``inp.augment`` set to None: :func:`gather_batch`
then compiles to the plain gather, and none of this code is compiled.
"""

import math

from numba import njit, types
from numba.extending import overload

from .activations import dropout_uniform
from .dense import gather_rows
from .._layout import AUGMENT_LAYER


def gather_batch(inp, rows, out, key, step):
    """``out <- X[rows]``, each row transformed by ``inp.augment`` unless that is None
    (``key``, ``step``: the random numbers' counters, as dropout's)."""


@overload(gather_batch)
def _gather_batch(inp, rows, out, key, step):
    if isinstance(inp.types[inp.fields.index("augment")], types.NoneType):
        return lambda inp, rows, out, key, step: gather_rows(inp.X, rows, out)
    return lambda inp, rows, out, key, step: augment_rows(inp.X, rows, out, inp.augment, key,
                                                          step)


@njit(inline="always")
def draw_shift(u, shift):
    """An integer in ``-shift .. shift`` from a uniform [0, 1) number."""
    span = 2 * shift + 1
    return min(int(math.floor(u * span)), span - 1) - shift


@njit
def augment_rows(X, rows, out, aug, key, step):
    """``out[r] <-`` row ``rows[r]`` of ``X`` transformed with the parameters of batch row
    ``r`` at update ``step`` (``aug``: a ``layout.Augment``)."""
    C, H, W = aug.channels, aug.height, aug.width
    for r in range(rows.size):
        src, dst = X[rows[r]], out[r]
        dx = draw_shift(dropout_uniform(key, step, AUGMENT_LAYER, r, 0), aug.shift)
        dy = draw_shift(dropout_uniform(key, step, AUGMENT_LAYER, r, 1), aug.shift)
        if aug.rotate == 0 and aug.scale == 0:
            shift_image(src, dst, C, H, W, dx, dy)
            continue
        theta = aug.rotate * (2 * dropout_uniform(key, step, AUGMENT_LAYER, r, 2) - 1) * (
            math.pi / 180)
        s = 1 + aug.scale * (2 * dropout_uniform(key, step, AUGMENT_LAYER, r, 3) - 1)
        warp_image(src, dst, C, H, W, dx, dy, math.cos(theta) / s, math.sin(theta) / s)


@njit(inline="always")
def shift_image(src, dst, C, H, W, dx, dy):
    """``dst[c, y, x] = src[c, y - dy, x - dx]``, 0 where that is outside the image."""
    lo = min(W, max(0, dx))  # x - dx in 0 .. W-1 for x in lo .. hi-1
    hi = max(lo, min(W, W + dx))
    for c in range(C):
        for y in range(H):
            row = (c * H + y) * W
            sy = y - dy
            if sy < 0 or sy >= H:
                for x in range(W):
                    dst[row + x] = 0
                continue
            from_row = (c * H + sy) * W - dx
            for x in range(lo):
                dst[row + x] = 0
            for x in range(lo, hi):
                dst[row + x] = src[from_row + x]
            for x in range(hi, W):
                dst[row + x] = 0


@njit(inline="always")
def warp_image(src, dst, C, H, W, dx, dy, a, b):
    """``dst[c, p] = src[c, q]`` sampled bilinearly (0 outside), ``q = c₀ + M (p - c₀ - d)``
    with ``M = [[a, b], [-b, a]]`` in (x, y) order and ``c₀`` the image centre."""
    cy, cx = (H - 1) / 2, (W - 1) / 2
    for y in range(H):
        py = y - dy - cy
        for x in range(W):
            px = x - dx - cx
            qx = cx + a * px + b * py
            qy = cy - b * px + a * py
            fx0, fy0 = math.floor(qx), math.floor(qy)
            fx, fy = qx - fx0, qy - fy0
            x0, y0 = int(fx0), int(fy0)
            w00, w01 = (1 - fy) * (1 - fx), (1 - fy) * fx
            w10, w11 = fy * (1 - fx), fy * fx
            in_x0, in_x1 = 0 <= x0 < W, 0 <= x0 + 1 < W
            in_y0, in_y1 = 0 <= y0 < H, 0 <= y0 + 1 < H
            for c in range(C):
                base = c * H * W
                v = 0.0
                if in_y0 and in_x0:
                    v += w00 * src[base + y0 * W + x0]
                if in_y0 and in_x1:
                    v += w01 * src[base + y0 * W + x0 + 1]
                if in_y1 and in_x0:
                    v += w10 * src[base + (y0 + 1) * W + x0]
                if in_y1 and in_x1:
                    v += w11 * src[base + (y0 + 1) * W + x0 + 1]
                dst[base + y * W + x] = v
