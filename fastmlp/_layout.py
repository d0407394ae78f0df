"""The layer table: one int64 row per layer, the compiled code's whole view of an architecture.

Every layer maps a batch of flat rows ``(n, IN_C*IN_H*IN_W)`` to ``(n, OUT_C*OUT_H*OUT_W)``;
images travel flattened in ``(C, H, W)`` order, so the flatten before a dense layer is free.
A dense layer is ``IN_C = n_in, OUT_C = n_out`` with every height and width 1.

Parameters of layer ``l`` start at ``table[l, PARAM]`` in the flat parameter vector:

* dense: ``Wt`` of shape ``(n_in, n_out)`` (the public ``W`` transposed), then ``b (n_out,)``;
* conv:  ``W`` of shape ``(OUT_C, IN_C, KH, KW)`` (the public layout itself), then
  ``b (OUT_C,)``;
* pool:  none (``PARAM`` is where the next layer's would start).
"""

from collections import namedtuple

DENSE, CONV, POOL = 0, 1, 2

# Columns of a table row.
KIND, IN_C, IN_H, IN_W, OUT_C, OUT_H, OUT_W, KH, KW, STRIDE, PAD, PARAM, ACT = range(13)
COLUMNS = 13


# Arrays that travel together into the compiled calls (numba compiles namedtuple arguments,
# and caches them since these classes live at module level).

# The first layer's input: dense rows ``X``, or (``use_csr``) a CSR matrix whose rows are the
# samples (``X`` is then an empty placeholder of the right width). Dense rows of a part with
# fewer non-zeros than the fraction ``sparse_below`` go in through a CSR block.
Input = namedtuple("Input", ["X", "indptr", "indices", "data", "use_csr", "sparse_below"])

# Per-part workspaces: every 2-D array has one row per thread part; ``ident`` is an arange
# long enough to index any batch or layer.
Work = namedtuple("Work", ["acts", "xbuf", "scratch", "csr_indptr", "csr_indices", "csr_data",
                           "sp_indptr", "sp_indices", "sp_data", "delta_a", "delta_b",
                           "argmax", "conv", "ident"])

# A training run's scalar settings: the optimizer (``optimizer`` is a code of
# ``training.CODES``) and its hyper-parameters, L2 (``l2_per_weight``: divided by each batch's
# weight sum, scikit-learn's ``alpha``) and dropout with its mask key.
Settings = namedtuple("Settings", ["optimizer", "lr", "momentum", "nesterov", "beta1", "beta2",
                                   "eps", "l2", "l2_per_weight", "dropout", "key"])
