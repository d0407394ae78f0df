"""Convolution and max-pooling, forward and backward, on flat batches.

A batch is a 2-D array with one sample per row, each image flattened in ``(C, H, W)`` order;
``row`` is the layer's row of the layer table (:mod:`fastmlp._layout`). The math is
:func:`fastmlp.reference.conv2d` and friends: PyTorch's cross-correlation with zero padding.

Convolution runs as im2col + :func:`fastmlp.kernels.dense.gemm`, ``GROUP`` images at a time:

* forward: ``cols (C·kh·kw, g·OH·OW)`` holds every window of ``g`` images as a column, and
  ``Z = W (F, C·kh·kw) · cols + b`` is one wide product (2 x 196 = 392 columns at MNIST's
  second layer). At stride 1 each window row is a contiguous run of the padded image;
* ``∂C/∂W += δ (F, g·OH·OW) · colsᵀ`` and ``∂C/∂cols = δᵀ W`` run channels-last, where each
  window row is one run of ``kw·C`` floats for any stride: ``colsᵀ`` is written run by run,
  and ``∂C/∂cols`` is added back onto the (padded, channels-last) images run by run.

Why not direct loops: on the MNIST CNN's second layer (16x14x14 -> 32, 5x5, part of 64
images, one thread, AVX-512 Xeon) im2col + gemm's forward ran at ~90 GFLOP/s, direct loops
over 4 filters x one output row at 4 GFLOP/s (14-pixel rows do not fill a vector) and over a
padded "wide" row grid at 22 GFLOP/s. im2col itself costs ~20 % of the forward pass.

Every kernel is serial and allocates nothing: :mod:`.threads` splits the images (forward,
input gradient) or the filters (weight gradient) between threads, each with its own ``work``
(:func:`conv_work_size` floats, allocated once per ``fit``).
"""

from numba import njit, uint64

from .dense import gemm
from .._layout import IN_C, IN_H, IN_W, KH, KW, OUT_C, OUT_H, OUT_W, PAD, STRIDE

# Reassociation lets LLVM vectorize the reductions; NaN/inf semantics stay IEEE.
FAST = {"reassoc", "contract", "nsz"}

# Images per im2col block. With dense.gemm's register tiles, 1, 2 and 4 images per block
# (196 to 784 columns at MNIST's second layer) run within 5 % of each other; 8 is ~20 %
# slower, its 2.5 MB block no longer in a core's L2. 2 keeps the workspace small (0.8 MB
# for that layer).
GROUP = 2


@njit(inline="always")
def _valid(o_count, stride, shift, size):
    """``[lo, hi)``: the outputs ``o`` whose input ``o·stride + shift`` lies in ``[0, size)``."""
    lo = 0
    if shift < 0:
        lo = (-shift + stride - 1) // stride
    hi = 0
    if size - 1 - shift >= 0:
        hi = (size - 1 - shift) // stride + 1
    return min(lo, o_count), max(min(hi, o_count), min(lo, o_count))


@njit
def im2col(X, i0, g, row, cols):
    """``cols[(c·kh + u)·kw + v, k·OH·OW + i·OW + j] <- Xp[i0 + k, c, i·s + u, j·s + v]``
    for the ``g`` images from ``i0`` (``Xp``: zero-padded), any stride, element by element:
    the forward pass's im2col at stride > 1 (stride 1 takes :func:`_im2col_s1`)."""
    C, H, W = row[IN_C], row[IN_H], row[IN_W]
    OH, OW, kh, kw = row[OUT_H], row[OUT_W], row[KH], row[KW]
    s, p = row[STRIDE], row[PAD]
    ohow = OH * OW
    for c in range(C):
        for u in range(kh):
            i_lo, i_hi = _valid(OH, s, u - p, H)
            for v in range(kw):
                j_lo, j_hi = _valid(OW, s, v - p, W)
                out = cols[(c * kh + u) * kw + v]
                for k in range(g):
                    x = X[i0 + k]
                    base = k * ohow
                    for q in range(base, base + i_lo * OW):
                        out[q] = 0
                    for i in range(i_lo, i_hi):
                        o = base + i * OW
                        src = c * H * W + (i * s + u - p) * W + v - p
                        for j in range(j_lo):
                            out[o + j] = 0
                        for j in range(j_lo, j_hi):
                            out[o + j] = x[src + j * s]
                        for j in range(j_hi, OW):
                            out[o + j] = 0
                    for q in range(base + i_hi * OW, base + ohow):
                        out[q] = 0


# --- contiguous runs ----------------------------------------------------------------------
# numba cannot tell that two slices of one workspace do not overlap, and its signed indices
# carry a negative-index check: a copy loop written plainly stays scalar. With unsigned
# indices LLVM's loop vectorizer takes long runs (it checks for overlap at run time). Short
# runs (stride 1's 14-pixel rows) go through _copy16: sixteen loads, then sixteen stores, which
# LLVM fuses into vector moves. It writes up to 15 floats past its run: runs are written in
# increasing order, so the next run overwrites them, and the last one lands in SLACK floats
# kept free for it (and reads at most SLACK floats past its source, kept zero).

SLACK = 16


@njit(inline="always")
def _copy16(src, a, dst, b):
    """``dst[b:b+16] <- src[a:a+16]``. All loads come before all stores, and the indices are
    unsigned (no negative-index wraparound), so LLVM may fuse them into one vector move even
    though it cannot prove that ``src`` and ``dst`` do not overlap."""
    t0, t1, t2, t3 = src[a], src[a + uint64(1)], src[a + uint64(2)], src[a + uint64(3)]
    t4, t5, t6, t7 = src[a + uint64(4)], src[a + uint64(5)], src[a + uint64(6)], src[a + uint64(7)]
    t8, t9 = src[a + uint64(8)], src[a + uint64(9)]
    t10, t11 = src[a + uint64(10)], src[a + uint64(11)]
    t12, t13, t14, t15 = (src[a + uint64(12)], src[a + uint64(13)], src[a + uint64(14)],
                          src[a + uint64(15)])
    dst[b], dst[b + uint64(1)], dst[b + uint64(2)], dst[b + uint64(3)] = t0, t1, t2, t3
    dst[b + uint64(4)], dst[b + uint64(5)], dst[b + uint64(6)], dst[b + uint64(7)] = t4, t5, t6, t7
    dst[b + uint64(8)], dst[b + uint64(9)] = t8, t9
    dst[b + uint64(10)], dst[b + uint64(11)] = t10, t11
    dst[b + uint64(12)], dst[b + uint64(13)] = t12, t13
    dst[b + uint64(14)], dst[b + uint64(15)] = t14, t15


@njit
def _pad_images(X, i0, g, C, H, W, ph, pw, xp):
    """``xp (g, C, H + 2ph, W + 2pw)`` (flat) <- the ``g`` images of ``X`` from ``i0``, padded."""
    Hp, Wp = H + 2 * ph, W + 2 * pw
    for q in range(g * C * Hp * Wp + SLACK):
        xp[q] = 0
    for k in range(g):
        x = X[i0 + k]
        for c in range(C):
            for y in range(H):
                dst = ((k * C + c) * Hp + y + ph) * Wp + pw
                src = (c * H + y) * W
                for j in range(W):
                    xp[dst + j] = x[src + j]


@njit
def _im2col_s1(xp, g, C, Hp, Wp, kh, kw, cols):
    """Stride-1 im2col from padded images: ``cols (C·kh·kw, g·OH·OW)`` (flat, SLACK after)."""
    OH, OW = Hp - kh + 1, Wp - kw + 1
    ohow = OH * OW
    width = g * ohow
    for c in range(C):
        for u in range(kh):
            for v in range(kw):
                dst = uint64(((c * kh + u) * kw + v) * width)
                for k in range(g):
                    src = uint64((k * C + c) * Hp * Wp + u * Wp + v)
                    for i in range(OH):
                        for t in range(0, OW, 16):
                            _copy16(xp, src + uint64(t), cols, dst + uint64(t))
                        dst += uint64(OW)
                        src += uint64(Wp)


@njit
def _pad_hwc(X, i0, g, C, H, W, p, xh):
    """``xh (g, H + 2p, W + 2p, C)`` (flat, channels last) <- the ``g`` images from ``i0``,
    zero-padded: a window row ``xh[k, y, x:x+kw, :]`` is then one contiguous run."""
    Hp, Wp = H + 2 * p, W + 2 * p
    for q in range(g * Hp * Wp * C + SLACK):
        xh[q] = 0
    for k in range(g):
        x = X[i0 + k]
        for c in range(C):
            for y in range(H):
                dst = ((k * Hp + y + p) * Wp + p) * C + c
                src = (c * H + y) * W
                for j in range(W):
                    xh[dst + j * C] = x[src + j]


@njit
def _im2col_hwc_t(xh, g, C, Hp, Wp, kh, kw, s, OH, OW, cols_t):
    """``cols_t[k·OH·OW + i·OW + j, (u·kw + v)·C + c] <- xh[k, i·s + u, j·s + v, c]`` (flat,
    SLACK after): one row per output pixel, ``kh`` contiguous runs of ``kw·C`` floats each."""
    run = kw * C
    K = kh * run
    r = 0
    for k in range(g):
        for i in range(OH):
            for j in range(OW):
                dst = uint64(r * K)
                for u in range(kh):
                    src = uint64(((k * Hp + i * s + u) * Wp + j * s) * C)
                    if run >= 16:  # long runs: LLVM's loop vectorizer, with its overlap check
                        for t in range(run):
                            cols_t[dst + uint64(t)] = xh[src + uint64(t)]
                    else:
                        _copy16(xh, src, cols_t, dst)
                    dst += uint64(run)
                r += 1


@njit
def _col2im_hwc(P, g, C, Hp, Wp, kh, kw, s, OH, OW, xh):
    """``xh[k, i·s + u, j·s + v, c] += P[k·OH·OW + i·OW + j, (u·kw + v)·C + c]``: the adjoint of
    :func:`_im2col_hwc_t`, into padded channels-last images (zeroed by the caller)."""
    run = kw * C
    K = kh * run
    r = 0
    for k in range(g):
        for i in range(OH):
            for j in range(OW):
                src = uint64(r * K)
                for u in range(kh):
                    dst = uint64(((k * Hp + i * s + u) * Wp + j * s) * C)
                    for t in range(run):  # unsigned indices: LLVM vectorizes the run
                        xh[dst + uint64(t)] += P[src + uint64(t)]
                    src += uint64(run)
                r += 1


@njit
def _unpad_hwc(xh, i0, g, C, H, W, p, dX):
    """``dX[i0 + k] <- xh[k]`` without its padding, back in ``(C, H, W)`` order."""
    Hp, Wp = H + 2 * p, W + 2 * p
    for k in range(g):
        x = dX[i0 + k]
        for c in range(C):
            for y in range(H):
                src = ((k * Hp + y + p) * Wp + p) * C + c
                dst = (c * H + y) * W
                for j in range(W):
                    x[dst + j] = xh[src + j * C]


@njit
def _sections(row, G):
    """Offsets in ``work``: the (permuted) kernel and its gradient come first, then cols
    (forward), colsᵀ (∂C/∂W) or their product with δ (∂C/∂X); the padded images; the group's
    outputs or δ. Returns the four offsets and the total."""
    C, H, W, F = row[IN_C], row[IN_H], row[IN_W], row[OUT_C]
    OH, OW, kh, kw, p = row[OUT_H], row[OUT_W], row[KH], row[KW], row[PAD]
    ckk = C * kh * kw
    cols_at = 2 * ckk * F
    xp_at = cols_at + ckk * G * OH * OW + SLACK
    d_at = xp_at + G * C * (H + 2 * p) * (W + 2 * p) + SLACK
    return cols_at, xp_at, d_at, d_at + F * G * OH * OW


def conv_work_size(row, n):
    """Floats of ``work`` that a convolution layer needs for ``n`` samples (one thread's
    share): plain Python (the layout function run uncompiled), for sizing workspaces."""
    return _sections.py_func(row, min(n, GROUP))[3]


@njit(fastmath=FAST)
def conv_forward(X, W, b, row, Z, work):
    """``Z <- conv(X) + b`` (overwrite) for a batch of flat rows.

    ``X (n, C·H·W)``, ``W (F, C·kh·kw)`` (the public ``(F, C, kh, kw)`` layout, flattened),
    ``b (F,)``, ``Z (n, F·OH·OW)``; ``work`` holds :func:`conv_work_size` floats.
    """
    n = X.shape[0]
    C, H, W_, F = row[IN_C], row[IN_H], row[IN_W], row[OUT_C]
    kh, kw, p = row[KH], row[KW], row[PAD]
    ckk = C * kh * kw
    ohow = row[OUT_H] * row[OUT_W]
    G = min(n, GROUP)
    cols_at, xp_at, out_at, _ = _sections(row, G)
    for i0 in range(0, n, G):
        g = min(G, n - i0)
        width = g * ohow
        cols = work[cols_at:cols_at + ckk * width].reshape((ckk, width))
        out = work[out_at:out_at + F * width].reshape((F, width))
        if row[STRIDE] == 1:
            _pad_images(X, i0, g, C, H, W_, p, p, work[xp_at:])
            _im2col_s1(work[xp_at:], g, C, H + 2 * p, W_ + 2 * p, kh, kw, work[cols_at:])
        else:
            im2col(X, i0, g, row, cols)
        for f in range(F):  # the bias first: gemm adds onto its output
            o = out[f]
            bf = b[f]
            for q in range(width):
                o[q] = bf
        gemm(W, cols, out)
        for k in range(g):  # (F, g, OH·OW) -> (g, F, OH·OW)
            z = Z[i0 + k]
            for f in range(F):
                o = out[f]
                for q in range(ohow):
                    z[f * ohow + q] = o[k * ohow + q]


@njit(fastmath=FAST)
def conv_weight_gradient(X, delta, row, f_lo, f_hi, dW, db, work):
    """Filters ``f_lo .. f_hi - 1`` of the weight gradient of :func:`conv_forward` given
    ``delta = ∂C/∂Z (n, F·OH·OW)``: ``dW[f] (C·kh·kw) += Σ δ colsᵀ`` and ``db[f] += Σ δ``
    (the caller has put the L2 term in ``dW`` and zeroed ``db``).

    The product runs channels-last, where every window row is one contiguous run of ``kw·C``
    floats: ``colsᵀ`` has one row per output pixel, and ``∂C/∂W`` comes out with its columns
    in ``(u, v, c)`` order (permuted back once per call). Each filter's sum runs over the
    images in order, whichever filters a call takes.
    """
    n = X.shape[0]
    C, H, W_ = row[IN_C], row[IN_H], row[IN_W]
    OH, OW, kh, kw, p, s = row[OUT_H], row[OUT_W], row[KH], row[KW], row[PAD], row[STRIDE]
    Hp, Wp = H + 2 * p, W_ + 2 * p
    ckk = C * kh * kw
    ohow = OH * OW
    fc = f_hi - f_lo
    G = min(n, GROUP)
    cols_at, xp_at, d_at, _ = _sections(row, G)
    for f in range(f_lo, f_hi):
        acc = db[f]  # a local of db's dtype: the sum vectorizes (reassoc), in 16 partial sums
        for i in range(n):
            d = delta[i]
            for q in range(f * ohow, (f + 1) * ohow):
                acc += d[q]
        db[f] = acc
    dWp = work[:fc * ckk].reshape((fc, ckk))  # ∂C/∂W with columns in (u, v, c) order
    dWp[:] = 0
    for i0 in range(0, n, G):
        g = min(G, n - i0)
        width = g * ohow
        dg = work[d_at:d_at + fc * width].reshape((fc, width))
        for k in range(g):  # (g, F, OH·OW) -> (F, g·OH·OW)
            d = delta[i0 + k]
            for f in range(fc):
                o = dg[f]
                at = (f_lo + f) * ohow
                for q in range(ohow):
                    o[k * ohow + q] = d[at + q]
        _pad_hwc(X, i0, g, C, H, W_, p, work[xp_at:])
        _im2col_hwc_t(work[xp_at:], g, C, Hp, Wp, kh, kw, s, OH, OW, work[cols_at:])
        cols_t = work[cols_at:cols_at + width * ckk].reshape((width, ckk))
        gemm(dg, cols_t, dWp)
    for f in range(fc):
        for c in range(C):
            for u in range(kh):
                for v in range(kw):
                    dW[f_lo + f, (c * kh + u) * kw + v] += dWp[f, (u * kw + v) * C + c]


@njit(fastmath=FAST)
def conv_input_gradient(W, delta, row, dX, work):
    """``dX (n, C·H·W) <- ∂C/∂X`` (overwrite) of :func:`conv_forward` given ``delta``:
    ``∂C/∂cols = δᵀ W`` channels-last, added back onto the padded images run by run."""
    n = delta.shape[0]
    C, H, W_, F = row[IN_C], row[IN_H], row[IN_W], row[OUT_C]
    OH, OW, kh, kw, p, s = row[OUT_H], row[OUT_W], row[KH], row[KW], row[PAD], row[STRIDE]
    Hp, Wp = H + 2 * p, W_ + 2 * p
    ckk = C * kh * kw
    ohow = OH * OW
    G = min(n, GROUP)
    cols_at, xp_at, d_at, _ = _sections(row, G)
    Wp_ = work[F * ckk:2 * F * ckk].reshape((F, ckk))  # W with columns in (u, v, c) order
    for f in range(F):
        for c in range(C):
            for u in range(kh):
                for v in range(kw):
                    Wp_[f, (u * kw + v) * C + c] = W[f, (c * kh + u) * kw + v]
    for i0 in range(0, n, G):
        g = min(G, n - i0)
        width = g * ohow
        dgt = work[d_at:d_at + width * F].reshape((width, F))
        for k in range(g):  # (g, F, OH·OW) -> (g·OH·OW, F)
            d = delta[i0 + k]
            for f in range(F):
                for q in range(ohow):
                    dgt[k * ohow + q, f] = d[f * ohow + q]
        dcols_t = work[cols_at:cols_at + width * ckk].reshape((width, ckk))
        dcols_t[:] = 0
        gemm(dgt, Wp_, dcols_t)
        xh = work[xp_at:]
        for q in range(g * Hp * Wp * C):
            xh[q] = 0
        _col2im_hwc(work[cols_at:], g, C, Hp, Wp, kh, kw, s, OH, OW, xh)
        _unpad_hwc(xh, i0, g, C, H, W_, p, dX)


@njit
def _maxpool2_forward(X, C, H, W, OH, OW, s, Z, argmax):
    """:func:`maxpool_forward` for 2 x 2 windows, unrolled: the generic window loops of two
    steps each cost three times as much (MNIST CNN shapes)."""
    for r in range(X.shape[0]):
        x = X[r]
        z = Z[r]
        a = argmax[r]
        o = 0
        for c in range(C):
            for i in range(OH):
                first = c * H * W + i * s * W
                for j in range(OW):
                    p = first + j * s
                    best = x[p]
                    where = p
                    v = x[p + 1]
                    if v > best:
                        best = v
                        where = p + 1
                    v = x[p + W]
                    if v > best:
                        best = v
                        where = p + W
                    v = x[p + W + 1]
                    if v > best:
                        best = v
                        where = p + W + 1
                    z[o] = best
                    a[o] = where
                    o += 1


@njit
def maxpool_forward(X, row, Z, argmax):
    """``Z[c, i, j] <- max`` of each window, ``argmax`` (int32) <- the winner's flat index
    into its sample's row. Ties: the first maximum in row-major window order (the reference's
    rule), hence the strict ``>``."""
    C, H, W = row[IN_C], row[IN_H], row[IN_W]
    OH, OW, kh, kw, s = row[OUT_H], row[OUT_W], row[KH], row[KW], row[STRIDE]
    if kh == 2 and kw == 2:
        _maxpool2_forward(X, C, H, W, OH, OW, s, Z, argmax)
        return
    for r in range(X.shape[0]):
        x = X[r]
        z = Z[r]
        a = argmax[r]
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    first = c * H * W + i * s * W + j * s
                    best = x[first]
                    where = first
                    for u in range(kh):
                        at = first + u * W
                        for v in range(kw):
                            if x[at + v] > best:
                                best = x[at + v]
                                where = at + v
                    o = (c * OH + i) * OW + j
                    z[o] = best
                    a[o] = where


@njit
def maxpool_backward(delta, argmax, row, dX):
    """``dX <- 0``, then each output's δ added onto its winner (overlapping windows sum)."""
    for r in range(delta.shape[0]):
        d = dX[r]
        d[:] = 0
        e = delta[r]
        a = argmax[r]
        for o in range(e.size):
            d[a[o]] += e[o]
