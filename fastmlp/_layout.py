"""The layer table: one int64 row per layer, the compiled code's whole view of an architecture.

Every layer maps a batch of flat rows ``(n, IN_C*IN_H*IN_W)`` to ``(n, OUT_C*OUT_H*OUT_W)``;
images travel flattened in ``(C, H, W)`` order, so the flatten before a dense layer is free.
A dense layer is ``IN_C = n_in, OUT_C = n_out`` with every height and width 1.

Parameters of layer ``l`` start at ``table[l, PARAM]`` in the flat parameter vector:

* dense: ``Wt`` of shape ``(n_in, n_out)`` (the public ``W`` transposed), then ``b (n_out,)``;
* conv:  ``W`` of shape ``(OUT_C, IN_C, KH, KW)`` (the public layout itself), then
  ``b (OUT_C,)``;
* batchnorm: ``γ (C,)``, ``β (C,)``, then the running mean and variance ``(C,)`` each
  (not trained: their gradient is 0, so every optimizer leaves them as the forward pass
  set them);
* pooling, dropout: none (``PARAM`` is where the next layer's would start).

``ACT`` is the activation applied to the layer's output, or -1 for none (pooling, dropout,
and a layer whose BatchNorm applies its activation instead). ``BN_EPS`` and ``BN_MOMENTUM``
hold a BatchNorm's float settings as their float64 bits.
"""

from collections import namedtuple

DENSE, CONV, POOL, AVGPOOL, BATCHNORM, DROPOUT = range(6)

# The codes the kernels branch on, kept here (plain Python, no numba) so that the layer table
# and the compiled backend name them without importing the kernels, which import them from
# here: one place.
RELU, SIGMOID, TANH, IDENTITY, SOFTMAX, EXP = range(6)
ACTIVATION_CODES = {"relu": RELU, "sigmoid": SIGMOID, "tanh": TANH, "identity": IDENTITY,
                    "softmax": SOFTMAX, "exp": EXP}
CROSS_ENTROPY, MSE, BINARY_CROSS_ENTROPY, POISSON = range(4)
COST_CODES = {"cross_entropy": CROSS_ENTROPY, "mse": MSE,
              "binary_cross_entropy": BINARY_CROSS_ENTROPY, "poisson": POISSON}
SGD, MOMENTUM, ADAM = range(3)
OPTIMIZER_CODES = {"sgd": SGD, "momentum": MOMENTUM, "adam": ADAM}

# Columns of a table row.
(KIND, IN_C, IN_H, IN_W, OUT_C, OUT_H, OUT_W, KH, KW, STRIDE, PAD, PARAM, ACT, BN_EPS,
 BN_MOMENTUM) = range(15)
COLUMNS = 15

# What a forward pass is for: prediction (BatchNorm uses its running statistics), a gradient
# of the training-mode cost (the batch's own statistics), or a training step (the batch's
# statistics, and the running ones move towards them).
PREDICT, BATCH_STATS, TRAIN = range(3)


# Arrays that travel together into the compiled calls (numba compiles namedtuple arguments,
# and caches them since these classes live at module level).

# The first layer's input: dense rows ``X``, or (``use_csr``) a CSR matrix whose rows are the
# samples (``X`` is then an empty placeholder of the right width). Dense rows of a batch with
# fewer non-zeros than the fraction ``sparse_below`` go in through a CSR block. ``augment`` is
# None, or (training only) an ``Augment``: each gathered row is then randomly transformed
# (kernels/augment.py); None compiles none of that code.
Input = namedtuple("Input", ["X", "indptr", "indices", "data", "use_csr", "sparse_below",
                             "augment"])

# Data augmentation of image rows ``(channels, height, width)``, flattened: a random integer
# shift of up to ``shift`` pixels each way, a rotation of up to ``rotate`` degrees and a
# scaling by up to ``scale`` (a fraction) either way, about the image centre. Its random
# numbers are dropout's hash with this ``layer`` counter, which no layer index reaches.
Augment = namedtuple("Augment", ["shift", "rotate", "scale", "channels", "height", "width"])
AUGMENT_LAYER = 2**31 - 1

# The workspace of one compiled call (:class:`fastmlp._compiled.Workspace`): flat buffers
# sized for the most rows the call takes at a time, ``conv`` one row per thread; ``ident`` is
# an arange long enough to index any batch or layer, ``grads`` the gradient (training only),
# ``targets``/``weights`` the batch's gathered targets and sample weights, ``norm`` the
# BatchNorm layers' batch statistics.
Work = namedtuple("Work", ["acts", "xbuf", "scratch", "csr_indptr", "csr_indices", "csr_data",
                           "sp_indptr", "sp_indices", "sp_data", "delta_a", "delta_b",
                           "argmax", "conv", "ident", "grads", "targets", "weights", "norm"])

# A training run's settings: the optimizer (``optimizer`` is a code of
# ``kernels.optimizers.CODES``) and its hyper-parameters, L2 (``l2_per_weight``: divided by
# each batch's weight sum, scikit-learn's ``alpha``), each layer's dropout rate (``rates``,
# float64, :func:`fastmlp.layers.dropout_rates`) and the masks' key.
Settings = namedtuple("Settings", ["optimizer", "lr", "momentum", "nesterov", "beta1", "beta2",
                                   "eps", "l2", "l2_per_weight", "rates", "key"])
