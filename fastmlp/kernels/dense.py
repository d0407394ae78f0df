"""The matrix products of a dense layer.

* ``gemm``: ``out += A B`` with register tiles (6 rows x 4 vector registers of columns on
  AVX-512) generated as explicit vector code, blocked so that B's strip stays in L1.
  Hidden layers' forward (``Z = A Wt + b``), weight gradient (``dWt = Aᵀ δ + l2 Wt``) and
  input gradient (``G = δ W``) all run on it; a single row (one-sample prediction) streams
  through ``gemm_rows``.
* ``spmm``: the same product with a sparse left factor in CSR form. MNIST pixels are ~80 %
  zeros, so the first layer's forward (rows: samples) and weight gradient (rows of Xᵀ: input
  pixels) compress each batch on the fly (``dense_to_csr``, ``csr_rows_transposed``) and skip
  the zeros outright.

All of them are serial: :mod:`.threads` splits each product's output rows between threads.
"""

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import config, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# Reassociation lets LLVM vectorize; NaN/inf semantics stay IEEE.
FAST = {"reassoc", "contract", "nsz"}


# Columns of B per pass of spmm: a 784 x 128 float32 slab of weights (400 KB) stays in a
# core's L2 cache while every sample of the batch walks it.
SLAB = 128


@njit(fastmath=FAST)
def spmm_rows(indptr, indices, data, rows, B, out):
    """spmm for operands the register form does not take (narrower than a register, rows with
    gaps): ``out[i] += Σ_p data[p] · B[indices[p]]`` over the stored entries of CSR row
    ``rows[i]``. Eight entries are folded into each pass over ``out[i]``, so the output row
    is loaded and stored once per eight rows of ``B`` instead of once per row.
    """
    n_out = B.shape[1]
    n_slabs = (n_out + SLAB - 1) // SLAB
    for task in range(rows.size * n_slabs):
        # Slab-major order: all rows of a batch walk the same slab of B one after another.
        slab = task // rows.size
        i = task - slab * rows.size
        j0 = slab * SLAB
        j1 = min(n_out, j0 + SLAB)
        o = out[i, j0:j1]
        row = rows[i]
        p = indptr[row]
        end = indptr[row + 1]
        while p + 8 <= end:
            a0, a1, a2, a3 = data[p], data[p + 1], data[p + 2], data[p + 3]
            a4, a5, a6, a7 = data[p + 4], data[p + 5], data[p + 6], data[p + 7]
            b0, b1 = B[indices[p], j0:j1], B[indices[p + 1], j0:j1]
            b2, b3 = B[indices[p + 2], j0:j1], B[indices[p + 3], j0:j1]
            b4, b5 = B[indices[p + 4], j0:j1], B[indices[p + 5], j0:j1]
            b6, b7 = B[indices[p + 6], j0:j1], B[indices[p + 7], j0:j1]
            for j in range(j1 - j0):
                o[j] += ((a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j])
                         + (a4 * b4[j] + a5 * b5[j] + a6 * b6[j] + a7 * b7[j]))
            p += 8
        while p < end:
            a0 = data[p]
            b0 = B[indices[p], j0:j1]
            for j in range(j1 - j0):
                o[j] += a0 * b0[j]
            p += 1


@njit
def fill_rows(out, b):
    """Every row of ``out`` <- ``b`` (the bias, before spmm adds A Wt)."""
    for r in range(out.shape[0]):
        out[r] = b


@njit
def scaled_copy(out, W, scale):
    """``out <- scale · W`` (the L2 term, before spmm adds Aᵀ δ)."""
    for k in range(W.shape[0]):
        for j in range(W.shape[1]):
            out[k, j] = scale * W[k, j]


@njit
def dense_to_csr(A, rows, indptr, indices, data):
    """CSR of ``A[rows]`` into preallocated arrays (``indptr`` has ``rows.size + 1`` slots)."""
    p = 0
    indptr[0] = 0
    for i in range(rows.size):
        a = A[rows[i]]
        for k in range(a.size):
            if a[k] != 0:
                indices[p] = k
                data[p] = a[k]
                p += 1
        indptr[i + 1] = p


@njit
def transpose(A, out):
    """``out <- Aᵀ`` (into a workspace), by blocks to stay within cache lines."""
    rows, cols = A.shape
    for r0 in range(0, rows, 16):
        for c0 in range(0, cols, 16):
            for r in range(r0, min(rows, r0 + 16)):
                for c in range(c0, min(cols, c0 + 16)):
                    out[c, r] = A[r, c]


@njit
def gather_rows(X, rows, out):
    for i in range(rows.size):
        out[i] = X[rows[i]]


@njit
def csr_rows_transposed(indptr, indices, data, rows, n_cols, t_indptr, t_indices, t_data):
    """CSR of ``X[rows]ᵀ`` for X in CSR form: a counting sort of the batch's entries by
    column, which keeps each column's rows in batch order."""
    for k in range(n_cols + 1):
        t_indptr[k] = 0
    for i in range(rows.size):
        for p in range(indptr[rows[i]], indptr[rows[i] + 1]):
            t_indptr[indices[p] + 1] += 1
    for k in range(n_cols):
        t_indptr[k + 1] += t_indptr[k]
    for i in range(rows.size):
        for p in range(indptr[rows[i]], indptr[rows[i] + 1]):
            k = indices[p]
            q = t_indptr[k]
            t_indices[q] = i
            t_data[q] = data[p]
            t_indptr[k] = q + 1
    for k in range(n_cols, 0, -1):  # the fill advanced each start to the next one's
        t_indptr[k] = t_indptr[k - 1]
    t_indptr[0] = 0


# ---------------------------------------------------------------------------------------------
# gemm: register tiles written as explicit vector code.
#
# LLVM does not find this kernel from loops: it cannot prove that ``out`` does not alias ``A``
# or ``B``, so it keeps the accumulators in memory and reloads them every inner index, and on
# AVX-512 CPUs it prefers 256-bit vectors for loops it vectorizes itself. The tile below is
# therefore generated as LLVM IR with the vector type spelled out: its accumulators are SSA
# values that live in registers for a whole pass over k, and each inner index costs NV vector
# loads of B, MR broadcasts of A and MR x NV fused multiply-adds.


def _vector_bytes():
    """Width of a SIMD register on the CPU numba compiles for (``NUMBA_CPU_FEATURES`` if set,
    as numba itself decides, else the host's)."""
    if config.CPU_FEATURES is not None:
        flags = {f[1:] for f in config.CPU_FEATURES.split(",") if f.startswith("+")}
    else:
        try:
            flags = {name for name, on in llvm.get_host_cpu_features().items() if on}
        except RuntimeError:  # some hosts cannot report features: assume 128-bit vectors
            flags = set()
    if "avx512f" in flags:
        return 64
    if "avx2" in flags and "fma" in flags:
        return 32
    return 16


VEC_BYTES = _vector_bytes()
# Rows (MR) x vectors of columns (NV) per register tile: MR * NV accumulators, NV vectors of B
# and one broadcast must fit the register file (32 zmm on AVX-512, 16 ymm/xmm otherwise); at
# least ~8 independent accumulators hide the multiply-add latency.
MR, NV = {64: (6, 4), 32: (6, 2), 16: (4, 2)}[VEC_BYTES]
# Inner indices per pass: a tile's KC x NV-register strip of B (32 KB on AVX-512) stays in L1
# while the block's row tiles pass over it.
KC = 128
# Rows per block: the MC x KC block of A (24 KB in float32) that every strip of B re-reads stays
# in L1/L2. (Copying each strip of B to contiguous memory first, as BLAS does, was measured
# with blocks of 64-120 rows: no gain on these shapes, so B is read in place.)
MC = 48


def _ir_tools(context, builder, dtype):
    """What both intrinsics' code generators build with: ``(fty, isz, vl, vty, intp, i8p,
    const, at, splat, zero, fma)`` — the element type and size, lanes per vector and the
    vector type, the index and byte-pointer types, an index constant, a byte address, a
    broadcast, the zero vector and LLVM's vector FMA."""
    fty = context.get_data_type(dtype)
    isz = context.get_abi_sizeof(fty)
    vl = VEC_BYTES // isz
    vty = ir.VectorType(fty, vl)
    intp = context.get_value_type(types.intp)
    i8p = ir.IntType(8).as_pointer()

    def const(v):
        return ir.Constant(intp, v)

    def at(base, offset):  # byte address
        return builder.gep(base, [offset], inbounds=True)

    def splat(x, ty):
        lanes = ir.VectorType(ty, vl)
        x = builder.insert_element(ir.Constant(lanes, ir.Undefined), x, const(0))
        return builder.shuffle_vector(x, ir.Constant(lanes, ir.Undefined),
                                      ir.Constant(ir.VectorType(ir.IntType(32), vl), None))

    zero = ir.Constant(vty, None)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3),
                                         f"llvm.fma.v{vl}f{8 * isz}")
    return fty, isz, vl, vty, intp, i8p, const, at, splat, zero, fma


def _tile_kernel(mr, nv):
    """An intrinsic ``tile(A, B, out, i0, j0, k0, k1, rskip, skip, bj0, bk0)``:
    ``out[i0:i0+mr, j0:j0+w] += A[i0:i0+mr, k0:k1] @ B[bk0:bk0+k1-k0, bj0:bj0+w]`` for
    ``w = nv`` vectors of columns, leaving the first ``rskip`` rows and ``skip`` columns of the
    tile unchanged (a last tile that overlaps the one before it: one tile shape serves every
    size, which keeps compile time down). Rows of ``B`` and ``out`` must be contiguous; ``A``
    may have any strides."""

    @intrinsic
    def tile(typingctx, A, B, out, i0, j0, k0, k1, rskip, skip, bj0, bk0):
        sig = types.void(A, B, out, *([types.intp] * 8))

        def codegen(context, builder, sig, args):
            aty, bty, oty = sig.args[:3]
            fty, isz, vl, vty, intp, i8p, const, at, splat, zero, fma = _ir_tools(
                context, builder, aty.dtype)
            a, b, o = (context.make_array(t)(context, builder, v)
                       for t, v in zip(sig.args[:3], args[:3]))
            i0, j0, k0, k1, rskip, skip, bj0, bk0 = args[3:]
            sa0, sa1 = cgutils.unpack_tuple(builder, a.strides, 2)
            sb0 = cgutils.unpack_tuple(builder, b.strides, 2)[0]
            so0 = cgutils.unpack_tuple(builder, o.strides, 2)[0]

            a_base = builder.bitcast(a.data, i8p)
            a_rows = [builder.mul(builder.add(i0, const(r)), sa0) for r in range(mr)]
            b_base = at(builder.bitcast(b.data, i8p),
                        builder.sub(builder.mul(bj0, const(isz)), builder.mul(k0, sb0)))
            b_base = at(b_base, builder.mul(bk0, sb0))  # row k of the loop is row bk0+k-k0

            entry = builder.block
            loop = builder.append_basic_block("tile.k")
            done = builder.append_basic_block("tile.done")
            builder.cbranch(builder.icmp_signed("<", k0, k1), loop, done)
            builder.position_at_end(loop)
            k = builder.phi(intp)
            acc = [[builder.phi(vty) for _ in range(nv)] for _ in range(mr)]
            b_row = at(b_base, builder.mul(k, sb0))
            bv = [builder.load(builder.bitcast(at(b_row, const(v * VEC_BYTES)), vty.as_pointer()),
                               align=isz) for v in range(nv)]
            a_col = builder.mul(k, sa1)
            new = []
            for r in range(mr):
                x = builder.load(builder.bitcast(at(a_base, builder.add(a_rows[r], a_col)),
                                                 fty.as_pointer()), align=isz)
                x = splat(x, fty)
                new.append([builder.call(fma, [x, bv[v], acc[r][v]]) for v in range(nv)])
            k_next = builder.add(k, const(1))
            body_end = builder.block
            k.add_incoming(k0, entry)
            k.add_incoming(k_next, body_end)
            for r in range(mr):
                for v in range(nv):
                    acc[r][v].add_incoming(zero, entry)
                    acc[r][v].add_incoming(new[r][v], body_end)
            builder.cbranch(builder.icmp_signed("<", k_next, k1), loop, done)

            builder.position_at_end(done)
            total = [[builder.phi(vty) for _ in range(nv)] for _ in range(mr)]
            for r in range(mr):
                for v in range(nv):
                    total[r][v].add_incoming(zero, entry)
                    total[r][v].add_incoming(new[r][v], body_end)
            skip_v = splat(skip, intp)
            o_base = at(builder.bitcast(o.data, i8p), builder.mul(j0, const(isz)))
            keep = [builder.icmp_signed(
                ">=", ir.Constant(ir.VectorType(intp, vl), [v * vl + i for i in range(vl)]),
                skip_v) for v in range(nv)]
            for r in range(mr):
                row_kept = builder.icmp_signed(">=", const(r), rskip)
                o_row = at(o_base, builder.mul(builder.add(i0, const(r)), so0))
                for v in range(nv):
                    p = builder.bitcast(at(o_row, const(v * VEC_BYTES)), vty.as_pointer())
                    add = builder.select(keep[v], total[r][v], zero)
                    s = builder.fadd(builder.load(p, align=isz),
                                     builder.select(row_kept, add, zero))
                    builder.store(s, p, align=isz)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_wide_tile = _tile_kernel(MR, NV)
_narrow_tile = _tile_kernel(MR, 1)


@intrinsic
def _lanes(typingctx, like):
    """Elements of ``like``'s dtype per SIMD register, as a compile-time constant."""
    def codegen(context, builder, sig, args):
        isz = context.get_abi_sizeof(context.get_data_type(like.dtype))
        return ir.Constant(context.get_value_type(types.intp), VEC_BYTES // isz)
    return types.intp(like), codegen


@njit(fastmath=FAST)
def gemm_rows(A, B, out):
    """``out += A B`` one output row at a time, eight inner indices per sweep over ``j``: the
    form for a single row (a one-sample prediction: a matrix-vector product that streams B
    once, in order) and for operands the tiles do not take (narrower than a register, or
    rows with gaps)."""
    m, k_total = A.shape
    n = B.shape[1]
    for i in range(m):
        o = out[i]
        k = 0
        while k + 8 <= k_total:
            a0, a1, a2, a3 = A[i, k], A[i, k + 1], A[i, k + 2], A[i, k + 3]
            a4, a5, a6, a7 = A[i, k + 4], A[i, k + 5], A[i, k + 6], A[i, k + 7]
            b0, b1, b2, b3 = B[k], B[k + 1], B[k + 2], B[k + 3]
            b4, b5, b6, b7 = B[k + 4], B[k + 5], B[k + 6], B[k + 7]
            for j in range(n):
                o[j] += ((a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j])
                         + (a4 * b4[j] + a5 * b5[j] + a6 * b6[j] + a7 * b7[j]))
            k += 8
        while k < k_total:
            a = A[i, k]
            b = B[k]
            for j in range(n):
                o[j] += a * b[j]
            k += 1


@njit(fastmath=FAST)
def gemm(A, B, out):
    """``out += A B`` for ``A (m, k)``, ``B (k, n)``, ``out (m, n)`` (float32 or float64; rows
    of ``B`` and ``out`` contiguous for the fast path, any strides otherwise).

    Blocked as GotoBLAS does, without its copies: k in passes of at most KC, rows in blocks of
    MC, columns in strips of NV registers; each MR-row x strip tile keeps its sums in
    registers for a whole pass. The columns left over after the last whole strip go through
    one-register tiles; a last tile that would run past the rows or columns moves back to
    overlap its neighbour and leaves the overlap alone. Fewer than MR rows (one-sample
    prediction) stream through ``gemm_rows``. Nothing is allocated.
    """
    m, k_total = A.shape
    n = B.shape[1]
    vl = _lanes(B)
    if (m < MR or n < vl or B.strides[1] != B.itemsize or out.strides[1] != out.itemsize):
        gemm_rows(A, B, out)
        return
    wide = NV * vl
    n_wide = n - n % wide
    # Equal passes and blocks: a short last one would pay the set-up for little work.
    k_passes = (k_total + KC - 1) // KC
    kc = (k_total + k_passes - 1) // max(k_passes, 1)
    m_blocks = (m + MC - 1) // MC
    mc = (m + m_blocks - 1) // m_blocks
    for k0 in range(0, k_total, kc):
        k1 = min(k_total, k0 + kc)
        for ic in range(0, m, mc):
            ie = min(m, ic + mc)
            for j0 in range(0, n_wide, wide):
                for i0 in range(ic, ie, MR):
                    # A last tile past the block's end moves back over rows it leaves alone
                    # (m >= MR, so it stays inside out).
                    rskip = max(0, i0 + MR - ie)
                    _wide_tile(A, B, out, i0 - rskip, j0, k0, k1, rskip, 0, j0, k0)
            for j0 in range(n_wide, n, vl):
                skip = max(0, j0 + vl - n)
                for i0 in range(ic, ie, MR):
                    rskip = max(0, i0 + MR - ie)
                    _narrow_tile(A, B, out, i0 - rskip, j0 - skip, k0, k1, rskip, skip,
                                 j0 - skip, k0)


@njit(fastmath=FAST)
def gemm_nt(A, Bt, out):
    """``out += A Btᵀ`` as dot products of rows: the shape for a narrow output (``n`` small,
    e.g. 10 classes), where gemm's sweep over ``j`` would be too short to vectorize."""
    m, k_total = A.shape
    n = Bt.shape[0]
    for i in range(m):
        a = A[i]
        for j in range(n):
            b = Bt[j]
            s = out[i, j]  # accumulate in the array's own precision
            for k in range(k_total):
                s += a[k] * b[k]
            out[i, j] = s


@njit
def column_sums(delta, out):
    rows, cols = delta.shape
    for j in range(cols):
        out[j] = 0
    for r in range(rows):
        for j in range(cols):
            out[j] += delta[r, j]


@njit
def to_csr(X):
    """``(indptr, indices, data)`` of a whole dense 2-D array, allocated to fit."""
    rows, cols = X.shape
    indptr = np.zeros(rows + 1, dtype=np.int64)
    for r in range(rows):
        count = 0
        for k in range(cols):
            if X[r, k] != 0:
                count += 1
        indptr[r + 1] = indptr[r] + count
    indices = np.empty(indptr[rows], dtype=np.int32)
    data = np.empty(indptr[rows], dtype=X.dtype)
    dense_to_csr(X, np.arange(rows), indptr, indices, data)
    return indptr, indices, data


def _sparse_row_kernel(nv):
    """An intrinsic ``row(indptr, indices, data, row, B, out, i, j0, skip)``:
    ``out[i, j0:j0+w] += Σ_p data[p] · B[indices[p], j0:j0+w]`` over the stored entries of CSR
    row ``row``, for ``w = nv`` vectors of columns summed in registers, leaving the first
    ``skip`` columns unchanged. Rows of ``B`` and ``out`` must be contiguous."""

    @intrinsic
    def sparse_row(typingctx, indptr, indices, data, row, B, out, i, j0, skip):
        sig = types.void(indptr, indices, data, types.intp, B, out, *([types.intp] * 3))

        def codegen(context, builder, sig, args):
            pty, ity, dty, _, bty, oty = sig.args[:6]
            fty, isz, vl, vty, intp, i8p, const, at, splat, zero, fma = _ir_tools(
                context, builder, bty.dtype)
            ptr_a, idx_a, dat_a = (context.make_array(t)(context, builder, v)
                                   for t, v in zip(sig.args[:3], args[:3]))
            b = context.make_array(bty)(context, builder, args[4])
            o = context.make_array(oty)(context, builder, args[5])
            row, i, j0, skip = args[3], args[6], args[7], args[8]

            def element(arr, index, ty):  # arr[index] of a 1-D array
                stride = cgutils.unpack_tuple(builder, arr.strides, 1)[0]
                p = at(builder.bitcast(arr.data, i8p), builder.mul(index, stride))
                return builder.load(builder.bitcast(p, context.get_data_type(ty).as_pointer()))

            start = context.cast(builder, element(ptr_a, row, pty.dtype), pty.dtype, types.intp)
            row1 = builder.add(row, const(1))
            end = context.cast(builder, element(ptr_a, row1, pty.dtype), pty.dtype, types.intp)
            sb0 = cgutils.unpack_tuple(builder, b.strides, 2)[0]
            b_base = at(builder.bitcast(b.data, i8p), builder.mul(j0, const(isz)))

            entry = builder.block
            loop = builder.append_basic_block("row.p")
            done = builder.append_basic_block("row.done")
            builder.cbranch(builder.icmp_signed("<", start, end), loop, done)
            builder.position_at_end(loop)
            p = builder.phi(intp)
            acc = [builder.phi(vty) for _ in range(nv)]
            k = context.cast(builder, element(idx_a, p, ity.dtype), ity.dtype, types.intp)
            x = context.cast(builder, element(dat_a, p, dty.dtype), dty.dtype, bty.dtype)
            x = splat(x, fty)
            b_row = at(b_base, builder.mul(k, sb0))
            new = []
            for v in range(nv):
                bv = builder.load(builder.bitcast(at(b_row, const(v * VEC_BYTES)),
                                                  vty.as_pointer()), align=isz)
                new.append(builder.call(fma, [x, bv, acc[v]]))
            p_next = builder.add(p, const(1))
            body_end = builder.block
            p.add_incoming(start, entry)
            p.add_incoming(p_next, body_end)
            for v in range(nv):
                acc[v].add_incoming(zero, entry)
                acc[v].add_incoming(new[v], body_end)
            builder.cbranch(builder.icmp_signed("<", p_next, end), loop, done)

            builder.position_at_end(done)
            total = [builder.phi(vty) for _ in range(nv)]
            for v in range(nv):
                total[v].add_incoming(zero, entry)
                total[v].add_incoming(new[v], body_end)
            skip_v = splat(skip, intp)
            so0 = cgutils.unpack_tuple(builder, o.strides, 2)[0]
            o_row = at(at(builder.bitcast(o.data, i8p), builder.mul(j0, const(isz))),
                       builder.mul(i, so0))
            for v in range(nv):
                lane = ir.Constant(ir.VectorType(intp, vl), [v * vl + l for l in range(vl)])
                keep = builder.icmp_signed(">=", lane, skip_v)
                q = builder.bitcast(at(o_row, const(v * VEC_BYTES)), vty.as_pointer())
                s = builder.fadd(builder.load(q, align=isz), builder.select(keep, total[v], zero))
                builder.store(s, q, align=isz)
            return context.get_dummy_value()

        return sig, codegen

    return sparse_row


# Registers of columns per sparse row pass: 8 accumulators (plus a broadcast) fit even a
# 16-register file without spilling; on AVX-512 that is 128 float32 columns, SLAB's width.
SPARSE_NV = 8
_sparse_wide = _sparse_row_kernel(SPARSE_NV)
_sparse_narrow = _sparse_row_kernel(1)


@njit(fastmath=FAST)
def spmm(indptr, indices, data, rows, B, out):
    """``out[i] += Σ_p data[p] · B[indices[p]]`` over the stored entries of CSR row ``rows[i]``.

    Slab-major: every row of the batch walks one slab of B's columns (kept in L2) before the
    next slab; within a row the slab's sums stay in registers over all its stored entries, so
    each entry costs one broadcast and a row of B, and the output row is touched once.
    """
    n_out = B.shape[1]
    vl = _lanes(B)
    if n_out < vl or B.strides[1] != B.itemsize or out.strides[1] != out.itemsize:
        spmm_rows(indptr, indices, data, rows, B, out)
        return
    wide = SPARSE_NV * vl
    n_wide = n_out - n_out % wide
    for j0 in range(0, n_wide, wide):
        for i in range(rows.size):
            _sparse_wide(indptr, indices, data, rows[i], B, out, i, j0, 0)
    for j0 in range(n_wide, n_out, vl):
        skip = max(0, j0 + vl - n_out)
        for i in range(rows.size):
            _sparse_narrow(indptr, indices, data, rows[i], B, out, i, j0 - skip, skip)
