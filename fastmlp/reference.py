"""Feed-forward networks (dense, convolution, max-pooling) in plain numpy: the math, and the
ground truth for the kernels.

Notation, for one sample (a column vector):

    a⁰ = x,    zˡ = Wˡ aˡ⁻¹ + bˡ,    aˡ = fˡ(zˡ),    ŷ = aᴸ

``Wˡ`` has shape ``(n_out, n_in)``. A mini-batch holds one sample per *row*, so the same line
reads ``Z = A Wᵀ + b``. Backpropagation is the chain rule, one layer at a time:

    δᴸ = ∂C/∂zᴸ                             (softmax + cross-entropy: (ŷ - y) / n)
    ∂C/∂Wˡ = δˡᵀ aˡ⁻¹ (+ l2 Wˡ),   ∂C/∂bˡ = Σ_samples δˡ
    δˡ⁻¹ = (δˡ Wˡ) ⊙ fˡ⁻¹'(aˡ⁻¹)

Convolution (PyTorch's ``Conv2d``: cross-correlation) maps channels ``c`` of an image
``a[c, y, x]`` to feature maps ``f``, with ``Wˡ`` of shape ``(F, C, kh, kw)``, stride ``s``,
and ``ap`` the input zero-padded by ``p`` on every side:

    zˡ[f, i, j] = bˡ[f] + Σ_{c,u,v} Wˡ[f, c, u, v] · ap[c, i·s + u, j·s + v]
    OH = (H + 2p - kh) // s + 1      (floored: a window that would overhang is dropped)

Its backward is the same sum read the other way round:

    ∂C/∂Wˡ[f, c, u, v] = Σ_{i,j} δˡ[f, i, j] · ap[c, i·s + u, j·s + v]
    ∂C/∂bˡ[f] = Σ_{i,j} δˡ[f, i, j]
    ∂C/∂ap[c, i·s + u, j·s + v] += Σ_f δˡ[f, i, j] · Wˡ[f, c, u, v]   (then cut the padding)

Max-pooling (size ``k``, stride ``s``) keeps each window's maximum and remembers the winner;
the gradient flows back to the winner alone (summed where overlapping windows share one):

    z[c, i, j] = max_{u,v} a[c, i·s + u, j·s + v],    ∂C/∂a[winner of (c, i, j)] += δ[c, i, j]

Average pooling shares each window's gradient equally among its ``k²`` inputs:

    z[c, i, j] = mean_{u,v} a[c, i·s + u, j·s + v],    ∂C/∂a[c, i·s + u, j·s + v] += δ[c, i, j] / k²

Batch normalisation (after a layer ``z`` with weights, per channel ``c``; its statistics run
over the batch and every position, ``m`` values per channel) comes before that layer's
activation:

    x̂ = (z - μ) / √(σ² + ε),    y = γ x̂ + β,    a = f(y)
    ∂C/∂β = Σ δ,    ∂C/∂γ = Σ δ x̂,    ∂C/∂z = γ / (m √(σ² + ε)) · (m δ - ∂C/∂β - x̂ ∂C/∂γ)

(δ = ∂C/∂y). Training uses the batch's mean and biased variance, and moves the running
statistics towards them (``r ← (1 - momentum) r + momentum · batch``, the variance's unbiased
estimate ``σ² m / (m - 1)``); prediction uses the running ones. Dropout (a layer, or fit's
shorthand on hidden layers' outputs) multiplies by a mask while training (below).

Every function here is vectorized over the batch and takes the parameters as lists of arrays
in the public layout (BatchNorm's: objects with ``gamma, beta, running_mean, running_var``). This is ``Network(backend="numpy")``, and the compiled kernels in
:mod:`fastmlp.kernels` are tested against it.
"""

import numpy as np

from . import layers as layer_specs
from ._layout import AUGMENT_LAYER

# --- activations --------------------------------------------------------------------------
# Derivatives are written in terms of the activation's *output* a = f(z): that is all the
# compiled backward pass keeps, so the reference states the same identities.


def relu(z):
    return np.maximum(z, 0)


def relu_derivative(a):
    return (a > 0).astype(a.dtype)


def sigmoid(z):
    # exp of a non-positive number only, so large |z| never overflows.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype)


def sigmoid_derivative(a):
    return a * (1 - a)


def tanh(z):
    return np.tanh(z)


def tanh_derivative(a):
    return 1 - a * a


def identity(z):
    return z.copy()


def identity_derivative(a):
    return np.ones_like(a)


def exp(z):
    return np.exp(z)


def exp_derivative(a):
    return a  # (eᶻ)' = eᶻ


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# name -> (f, f' as a function of a). Softmax's derivative is a Jacobian, not elementwise:
# activation_backward handles it.
ACTIVATIONS = {
    "relu": (relu, relu_derivative),
    "sigmoid": (sigmoid, sigmoid_derivative),
    "tanh": (tanh, tanh_derivative),
    "identity": (identity, identity_derivative),
    "softmax": (softmax, None),
    "exp": (exp, exp_derivative),
}
COSTS = ("cross_entropy", "mse", "binary_cross_entropy", "poisson")
# Each cost's output activation, where it needs one: these pairs have δᴸ = (ŷ - y) / n.
# (poisson: the half Poisson deviance of scikit-learn's MLPRegressor, with its log link.)
OUTPUT_FOR_COST = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid",
                   "poisson": "exp"}


def activation_backward(name, a, grad_a):
    """Given ∂C/∂a for a = f(z), return ∂C/∂z."""
    if name == "softmax":
        # J = diag(a) - a aᵀ for each row, so Jᵀg = a ⊙ (g - <g, a>).
        return a * (grad_a - np.sum(grad_a * a, axis=1, keepdims=True))
    return grad_a * ACTIVATIONS[name][1](a)


# --- dropout ------------------------------------------------------------------------------
# Inverted dropout on hidden layers: keep a unit with probability 1 - p and scale it by
# 1 / (1 - p), so the expected activation is unchanged and inference needs no dropout.
# The keep/drop decisions come from a counter-based hash of (key, step, layer, row, unit):
# nothing is stored, the backward pass recomputes the mask, and the compiled kernels draw
# exactly the same masks (fastmlp.kernels.activations.dropout_uniform).

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_STEP, _LAYER, _ROW = np.uint64(0xD1B54A32D192ED03), np.uint64(0xABC98388FB8FAC03), np.uint64(
    0x8CB92BA72F3D8DD7)


def dropout_uniform(key, step, layer, rows, cols):
    """Uniform [0, 1) numbers for a ``(rows, cols)`` block: splitmix64 of the counters."""
    with np.errstate(over="ignore"):
        x = (np.uint64(key) + np.uint64(step) * _STEP + np.uint64(layer) * _LAYER
             + np.arange(rows, dtype=np.uint64)[:, None] * _ROW
             + np.arange(cols, dtype=np.uint64)[None, :] * _GOLDEN)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def dropout_mask(p, key, step, layer, shape, dtype):
    """``1/(1-p)`` where a unit is kept, 0 where it is dropped."""
    keep = dropout_uniform(key, step, layer, *shape) >= p
    return (keep / (1 - p)).astype(dtype)


# --- data augmentation --------------------------------------------------------------------
# Each image of a training batch is moved by its own random affine map about the image centre
# c = ((W-1)/2, (H-1)/2): rotated by θ, scaled by s, shifted by the integer d = (dx, dy).
# Output pixel p = (x, y) reads the input at the point that the map sends to p,
#
#     q = c + R(-θ) (p - c - d) / s,       R(-θ) = [[cos θ, sin θ], [-sin θ, cos θ]],
#
# interpolated bilinearly between the four pixels around q (0 outside the image); every
# channel gets the same map. With θ = 0 and s = 1, q = p - d exactly: an integer shift moves
# the pixels as they are. Sample r of the batch at update `step` draws its parameters from
# dropout's hash (layer counter AUGMENT_LAYER, which no layer index reaches, columns 0..3):
#
#     dx = ⌊u₀ (2·shift + 1)⌋ - shift,   dy = ⌊u₁ (2·shift + 1)⌋ - shift,
#     θ = rotate · (2u₂ - 1) degrees,    s = 1 + scale · (2u₃ - 1).


def augment_parameters(augment, key, step, n):
    """``(dx, dy, θ in radians, s)`` of the ``n`` samples of a batch, each of shape ``(n,)``
    (``augment``: a ``layout.Augment``)."""
    u = dropout_uniform(key, step, AUGMENT_LAYER, n, 4)
    span = 2 * augment.shift + 1
    dx, dy = (np.minimum(np.floor(u[:, k] * span), span - 1) - augment.shift for k in (0, 1))
    theta = augment.rotate * (2 * u[:, 2] - 1) * (np.pi / 180)
    return dx, dy, theta, 1 + augment.scale * (2 * u[:, 3] - 1)


def augment_batch(X, augment, key, step):
    """The batch ``X (n, C·H·W)`` with every image moved by its own map (see above)."""
    n, (C, H, W) = X.shape[0], (augment.channels, augment.height, augment.width)
    dx, dy, theta, s = (v[:, None, None] for v in augment_parameters(augment, key, step, n))
    cx, cy = (W - 1) / 2, (H - 1) / 2
    y, x = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")  # the output pixels p
    px, py = x - dx - cx, y - dy - cy  # p - c - d, shape (n, H, W)
    a, b = np.cos(theta) / s, np.sin(theta) / s
    qx = cx + a * px + b * py
    qy = cy - b * px + a * py
    return bilinear(X.reshape(n, C, H * W), H, W, qx, qy).reshape(n, -1).astype(X.dtype)


def bilinear(images, H, W, qx, qy):
    """``images (n, C, H·W)`` sampled at the points ``(qx, qy)`` (each ``(n, H', W')``):
    ``Σ`` over the four pixels around each point of ``(1 - |qx - x|)(1 - |qy - y|) ·
    pixel``, pixels outside the image counting 0. Returns ``(n, C, H'·W')``."""
    x0, y0 = np.floor(qx), np.floor(qy)
    fx, fy = qx - x0, qy - y0
    out = 0.0
    for oy, wy in ((0, 1 - fy), (1, fy)):
        for ox, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + ox, y0 + oy
            inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
            flat = (np.clip(yi, 0, H - 1) * W + np.clip(xi, 0, W - 1)).astype(np.int64)
            pixels = np.take_along_axis(images, flat.reshape(len(flat), 1, -1), axis=2)
            out = out + (wy * wx * inside).reshape(len(flat), 1, -1) * pixels
    return out


# --- forward ------------------------------------------------------------------------------
# mode: "predict" (BatchNorm's running statistics, no dropout), "batch" (the batch's own
# statistics, no dropout: the training-mode cost whose gradient Network.gradients gives) or
# "train" (a training step: batch statistics, which also move the running ones, and dropout).
MODES = ("predict", "batch", "train")


def forward(weights, biases, activations, X, dropout=0.0, key=0, step=0, layers=None,
            norms=(), mode="predict"):
    """Return ``(zs, acts)``: every layer's output before its activation and
    ``[a⁰ = X, a¹, ..., aᴸ]``.

    ``layers`` describes the network (the records of :func:`fastmlp.layers.plan`); without it
    every layer is dense. Batches stay flat rows ``(n, C·H·W)`` between layers. ``norms``
    holds the BatchNorm layers' parameters. In ``mode="train"`` a layer's output is
    multiplied by its dropout mask (a Dropout layer's rate, and ``dropout`` — fit's shorthand
    — on every hidden layer with weights) and BatchNorm's running statistics are updated in
    place.
    """
    layers = _plan(layers, weights)
    names = layer_specs.row_activations(layers, activations)
    rates = _rates(layers, dropout, mode)
    weighted, norms = iter(zip(weights, biases)), iter(norms)
    zs, acts = [], [X]
    a = X
    for index, (layer, name, rate) in enumerate(zip(layers, names, rates)):
        n = a.shape[0]
        image = a.reshape(n, *layer.in_shape)
        spec = layer.spec
        if layer.kind == "dense":
            W, b = next(weighted)
            z = a @ W.T + b
        elif layer.kind == "conv":
            W, b = next(weighted)
            z = conv2d(image, W, b, spec.stride, spec.padding)
        elif layer.kind == "pool":
            z = maxpool2d(image, spec.size, spec.stride)[0]
        elif layer.kind == "avgpool":
            z = avgpool2d(image, spec.size, spec.stride)
        elif layer.kind == "batchnorm":
            z = _batchnorm_layer(image, next(norms), spec, mode)
        else:  # dropout: the mask below
            z = a
        z = z.reshape(n, -1)
        a = z if name is None else ACTIVATIONS[name][0](z)
        if rate:
            a = a * dropout_mask(rate, key, step, index, a.shape, a.dtype)
        zs.append(z)
        acts.append(a)
    return zs, acts


def _rates(layers, dropout, mode):
    """Each layer's dropout rate in a pass of ``mode``: only training drops anything (a
    Dropout layer's own rate, and fit's ``dropout`` shorthand)."""
    if mode != "train":
        return [0.0] * len(layers)
    return layer_specs.dropout_rates(layers, dropout)


def _plan(layers, weights):
    """The layer records; for a plain MLP given as its weights alone, from their shapes."""
    if layers is not None:
        return layers
    return layer_specs.plan([weights[0].shape[1]] + [W.shape[0] for W in weights])


def _batchnorm_layer(z, bn, spec, mode):
    """:func:`batchnorm` of ``z`` with the statistics ``mode`` calls for."""
    if mode == "predict":
        return batchnorm(z, bn.gamma, bn.beta, bn.running_mean, bn.running_var, spec.eps)
    mean, var = batch_statistics(z)
    if mode == "train":
        m = z.size // z.shape[1]
        bn.running_mean[...] = (1 - spec.momentum) * bn.running_mean + spec.momentum * mean
        if m > 1:  # (one value says nothing about the variance)
            bn.running_var[...] = (1 - spec.momentum) * bn.running_var + \
                spec.momentum * var * m / (m - 1)
    return batchnorm(z, bn.gamma, bn.beta, mean, var, spec.eps)


def predict_proba(weights, biases, activations, X, layers=None, norms=()):
    return forward(weights, biases, activations, X, layers=layers, norms=norms)[1][-1]


# --- batch normalisation and average pooling ----------------------------------------------
# z is (n, C, H, W) (a dense layer's output as (n, C, 1, 1)); statistics are per channel over
# the batch and every position, computed in float64.


def _per_channel(v):
    return np.asarray(v, dtype=np.float64).reshape(1, -1, 1, 1)


def batch_statistics(z):
    """Per channel: the mean and the biased variance of ``z``'s values (float64)."""
    return z.mean(axis=(0, 2, 3), dtype=np.float64), z.var(axis=(0, 2, 3), dtype=np.float64)


def batchnorm(z, gamma, beta, mean, var, eps):
    """``y = γ (z - μ) / √(σ² + ε) + β``, per channel."""
    x_hat = (z - _per_channel(mean)) / np.sqrt(_per_channel(var) + eps)
    return (_per_channel(gamma) * x_hat + _per_channel(beta)).astype(z.dtype)


def batchnorm_backward(z, gamma, delta, eps):
    """``(∂C/∂z, ∂C/∂γ, ∂C/∂β)`` of :func:`batchnorm` with the batch's own statistics, given
    ``delta = ∂C/∂y``."""
    mean, var = batch_statistics(z)
    inv = 1 / np.sqrt(_per_channel(var) + eps)
    x_hat = (z - _per_channel(mean)) * inv
    m = z.size // z.shape[1]
    d_beta = delta.sum(axis=(0, 2, 3), dtype=np.float64)
    d_gamma = (delta * x_hat).sum(axis=(0, 2, 3))
    dz = _per_channel(gamma) * inv / m * (m * delta - _per_channel(d_beta)
                                          - x_hat * _per_channel(d_gamma))
    return dz.astype(z.dtype), d_gamma.astype(z.dtype), d_beta.astype(z.dtype)


def avgpool2d(X, size, stride=None):
    """``Z[c, i, j] = mean_{u,v} X[c, i·s + u, j·s + v]`` over ``size x size`` windows."""
    kh, kw = _pair(size)
    win = _windows(X, kh, kw, _pair(size if stride is None else stride))
    return win.mean(axis=(4, 5), dtype=np.float64).astype(X.dtype)


def avgpool2d_backward(delta, input_shape, size, stride=None):
    """``∂C/∂X`` of :func:`avgpool2d`: each output's δ shared equally by its window (summed
    where windows overlap)."""
    (kh, kw), (sh, sw) = _pair(size), _pair(size if stride is None else stride)
    dX = np.zeros(input_shape, dtype=delta.dtype)
    oh, ow = delta.shape[2:]
    share = delta / (kh * kw)
    for u in range(kh):
        for v in range(kw):
            dX[:, :, u:u + sh * oh:sh, v:v + sw * ow:sw] += share
    return dX


# --- cost ---------------------------------------------------------------------------------


def loss(weights, biases, activations, cost, X, Y, l2=0.0, layers=None, norms=(),
         mode="predict"):
    """Mean cost over the batch, plus ``l2/2 Σ‖W‖²``. ``Y`` holds one target row per sample."""
    zs, acts = forward(weights, biases, activations, X, layers=layers, norms=norms, mode=mode)
    return batch_loss(cost, zs[-1], acts[-1], Y) + l2_penalty(weights, l2)


def l2_penalty(weights, l2):
    if l2 == 0:
        return 0.0
    return 0.5 * l2 * float(sum(np.sum(W.astype(np.float64) ** 2) for W in weights))


def output_delta(cost, activation, out, Y, sample_weight=None):
    """δᴸ = ∂C/∂zᴸ for the mean cost over the batch (weighted: Σ wᵢ Cᵢ / Σ w)."""
    n, cols = out.shape
    if sample_weight is None:
        scale = np.full((n, 1), 1.0 / n)
    else:
        scale = (sample_weight / np.sum(sample_weight)).reshape(n, 1)
    if cost in OUTPUT_FOR_COST:
        # Softmax + cross-entropy, sigmoid + binary cross-entropy, exp + Poisson: the
        # activation's Jacobian and the derivative of the cost cancel exactly.
        return ((out - Y) * scale).astype(out.dtype)
    grad_out = (2 * (out - Y) * scale / cols).astype(out.dtype)
    return activation_backward(activation, out, grad_out)


# --- backward -----------------------------------------------------------------------------


def gradients(weights, biases, activations, cost, X, Y, l2=0.0, forward_pass=None,
              dropout=0.0, key=0, step=0, layers=None, sample_weight=None, norms=(),
              mode="batch"):
    """Return ``[(∂C/∂W, ∂C/∂b), ...]`` by the chain rule: a pair for every layer with
    trainable parameters, in order (BatchNorm's is ``(∂C/∂γ, ∂C/∂β)``), of the training-mode
    cost (batch statistics; ``mode="train"`` with the dropout masks of ``dropout, key,
    step`` too, see :func:`forward`).

    ``forward_pass`` may carry ``(zs, acts)`` already computed (training reuses it for the
    loss): the pass made with the same ``mode, dropout, key, step``.
    """
    layers = _plan(layers, weights)
    if forward_pass is None:
        forward_pass = forward(weights, biases, activations, X, dropout, key, step, layers,
                               norms, mode)
    zs, acts = forward_pass
    names = layer_specs.row_activations(layers, activations)
    rates = _rates(layers, dropout, mode)
    # Each layer's parameters: (W, b), a BatchNorm's parameter object, or None.
    weighted, norm_iter = iter(weights), iter(norms)
    params = [next(weighted) if layer.has_weights else next(norm_iter)
              if layer.kind == "batchnorm" else None for layer in layers]
    delta = output_delta(cost, activations[-1], acts[-1], Y, sample_weight)
    grads = {}
    for index in reversed(range(len(layers))):
        layer, a_in, spec = layers[index], acts[index], layers[index].spec
        n = a_in.shape[0]
        image = a_in.reshape(n, *layer.in_shape)
        delta_image = delta.reshape(n, *layer.out_shape)
        if layer.kind == "dense":
            W = params[index]
            dW, db = delta.T @ a_in, delta.sum(axis=0)
            grad_a = delta @ W
        elif layer.kind == "conv":
            W = params[index]
            grad_a, dW, db = conv2d_backward(image, W, delta_image, spec.stride, spec.padding)
        elif layer.kind == "pool":
            argmax = maxpool2d(image, spec.size, spec.stride)[1]
            grad_a = maxpool2d_backward(delta_image, argmax, image.shape)
        elif layer.kind == "avgpool":
            grad_a = avgpool2d_backward(delta_image, image.shape, spec.size, spec.stride)
        elif layer.kind == "batchnorm":
            grad_a, d_gamma, d_beta = batchnorm_backward(image, params[index].gamma,
                                                         delta_image, spec.eps)
            grads[index] = (d_gamma, d_beta)
        else:  # dropout: its mask is applied below, as the layer below's
            grad_a = delta
        if layer.has_weights:
            if l2:
                dW = dW + W.dtype.type(l2) * W
            grads[index] = (dW, db)
        if index == 0:
            break
        grad_a = grad_a.reshape(n, -1)
        below = index - 1
        if rates[below]:
            # a = f(z) ⊙ mask: the gradient passes through the mask, and f' is taken at
            # the activation before dropout.
            grad_a = grad_a * dropout_mask(rates[below], key, step, below, a_in.shape,
                                           a_in.dtype)
        name = names[below]
        delta = grad_a if name is None else activation_backward(
            name, ACTIVATIONS[name][0](zs[below]), grad_a)
    return [grads[k] for k in sorted(grads)]


# --- update -------------------------------------------------------------------------------


def update(optimizer, params, grads, state, learning_rate, momentum=0.9, nesterov=False,
           beta1=0.9, beta2=0.999, epsilon=1e-8):
    """One optimizer step, in place on every array of ``params`` (a flat list of W and b).

    ``state`` is a dict that persists between steps: velocities, Adam's moments, step count.
      sgd:       θ ← θ - η g
      momentum:  v ← μ v - η g;  θ ← θ + v   (Nesterov: θ ← θ + μ v - η g)
      adam:      m ← β₁m + (1-β₁)g;  v ← β₂v + (1-β₂)g²;  θ ← θ - η_t m / (√v + ε),
                 η_t = η √(1-β₂ᵗ) / (1-β₁ᵗ)
    """
    t = state.get("step", 0) + 1
    state["step"] = t
    for i, (p, g) in enumerate(zip(params, grads)):
        cast = p.dtype.type
        if optimizer == "sgd":
            p -= cast(learning_rate) * g
        elif optimizer == "momentum":
            v = state.setdefault(f"v{i}", np.zeros_like(p))
            v[...] = cast(momentum) * v - cast(learning_rate) * g
            if nesterov:
                p += cast(momentum) * v - cast(learning_rate) * g
            else:
                p += v
        elif optimizer == "adam":
            m = state.setdefault(f"m{i}", np.zeros_like(p))
            v = state.setdefault(f"v{i}", np.zeros_like(p))
            m[...] = cast(beta1) * m + cast(1 - beta1) * g
            v[...] = cast(beta2) * v + cast(1 - beta2) * g * g
            lr_t = learning_rate * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
            p -= cast(lr_t) * m / (np.sqrt(v) + cast(epsilon))
        else:
            raise ValueError(f"unknown optimizer {optimizer!r}")


def train_epoch(weights, biases, activations, cost, X, Y, order, batch_size, learning_rate,
                l2=0.0, optimizer="sgd", state=None, dropout=0.0, key=0, layers=None,
                sample_weight=None, l2_per_weight=False, norms=(), augment=None, **hyper):
    """One pass over ``X[order]`` in mini-batches.

    With ``augment`` (a ``layout.Augment``) every batch's images are moved by
    :func:`augment_batch` before they go in.

    Returns ``(mean training cost, fraction of samples classified right)``, both measured
    on each batch just before its update (with dropout on), as the compiled loop does; the
    cost is weighted by ``sample_weight`` when given. ``l2_per_weight`` divides each batch's
    L2 term by the batch's weight sum (its size without weights): scikit-learn's ``alpha``.
    """
    state = {} if state is None else state
    layers = _plan(layers, weights)
    params = trainable_parameters(layers, weights, biases, norms)
    total, correct = 0.0, 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        xb, yb = X[idx], Y[idx]
        wb = None if sample_weight is None else sample_weight[idx]
        step = state.get("step", 0)
        if augment is not None:
            xb = augment_batch(xb, augment, key, step)
        zs, acts = forward(weights, biases, activations, xb, dropout, key, step, layers, norms,
                           mode="train")
        costs = sample_costs(cost, zs[-1], acts[-1], yb)
        total += float(np.sum(costs if wb is None else wb * costs))
        correct += int(np.sum(classified_right(cost, acts[-1], yb)))
        l2_batch = l2 / (len(idx) if wb is None else float(np.sum(wb))) if l2_per_weight \
            else l2
        grads = gradients(weights, biases, activations, cost, xb, yb, l2_batch, (zs, acts),
                          dropout, key, step, layers, wb, norms, mode="train")
        flat_grads = [g for pair in grads for g in pair]
        update(optimizer, params, flat_grads, state, learning_rate, **hyper)
    n_total = len(order) if sample_weight is None else float(np.sum(sample_weight[order]))
    return total / n_total, correct / len(order)


def trainable_parameters(layers, weights, biases, norms=()):
    """Every trainable array in layer order, as :func:`gradients` lists their gradients:
    ``W, b`` of a layer with weights, ``γ, β`` of a BatchNorm."""
    weighted, norms = iter(zip(weights, biases)), iter(norms)
    params = []
    for layer in layers:
        if layer.has_weights:
            params.extend(next(weighted))
        elif layer.kind == "batchnorm":
            bn = next(norms)
            params.extend((bn.gamma, bn.beta))
    return params


def classified_right(cost, out, Y):
    """Per sample: the same argmax in ŷ and the targets or, for independent sigmoid outputs
    (binary cross-entropy), every output on the same side of 0.5 as its target."""
    if cost == "binary_cross_entropy":
        return np.all((out > 0.5) == (Y > 0.5), axis=1)
    return out.argmax(axis=1) == Y.argmax(axis=1)


def batch_loss(cost, z_out, out, Y, sample_weight=None):
    """The data part of the cost (no l2) from a forward pass already made: the mean of
    :func:`sample_costs`, weighted by ``sample_weight`` when given."""
    return float(np.average(sample_costs(cost, z_out, out, Y), weights=sample_weight))


def sample_costs(cost, z_out, out, Y):
    """Each sample's cost, shape ``(n,)``, in float64."""
    z_out, out, Y = (np.asarray(v, dtype=np.float64) for v in (z_out, out, Y))
    if cost == "cross_entropy":
        # log ŷ from z directly (log-softmax): finite even where ŷ underflows to 0.
        return -np.sum(Y * log_softmax(z_out), axis=1)
    if cost == "binary_cross_entropy":
        # -[y log σ(z) + (1-y) log(1-σ(z))] = y softplus(-z) + (1-y) softplus(z), summed over
        # outputs (scikit-learn's binary log-loss).
        return np.sum(Y * np.logaddexp(0, -z_out) + (1 - Y) * np.logaddexp(0, z_out), axis=1)
    if cost == "poisson":
        # Half the Poisson deviance, y log(y/ŷ) - y + ŷ with log ŷ = z, summed over outputs
        # (scikit-learn's poisson_loss); y log y is 0 at y = 0.
        y_log_y = np.where(Y > 0, Y * np.log(np.where(Y > 0, Y, 1)), 0)
        return np.sum(y_log_y - Y * z_out - Y + np.exp(z_out), axis=1)
    return np.mean((out - Y) ** 2, axis=1)


# --- convolution and max-pooling ----------------------------------------------------------
# Images are (n, C, H, W) arrays. Every formula below indexes one sample; numpy carries the
# batch axis along. Windows are read through sliding_window_view: no copies, no index maths.


def _pair(v):
    """``k`` or ``(kh, kw)`` -> ``(kh, kw)``."""
    return (int(v), int(v)) if np.ndim(v) == 0 else (int(v[0]), int(v[1]))


def _windows(X, kh, kw, stride):
    """``win[n, c, i, j, u, v] = X[n, c, i·sh + u, j·sw + v]``: every (floored) window."""
    sh, sw = stride
    return np.lib.stride_tricks.sliding_window_view(X, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


def _pad(X, padding):
    ph, pw = padding
    return np.pad(X, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def conv2d(X, W, b, stride=1, padding=0):
    """``Z[f, i, j] = b[f] + Σ_{c,u,v} W[f, c, u, v] · Xp[c, i·s + u, j·s + v]``.

    ``X (n, C, H, W)``, ``W (F, C, kh, kw)``, ``b (F,)`` -> ``Z (n, F, OH, OW)``; ``Xp`` is
    ``X`` zero-padded by ``padding`` on every side. ``stride`` and ``padding`` are ints or
    ``(h, w)`` pairs.
    """
    kh, kw = W.shape[2:]
    win = _windows(_pad(X, _pair(padding)), kh, kw, _pair(stride))
    return np.einsum("ncijuv,fcuv->nfij", win, W, optimize=True) + b[:, None, None]


def conv2d_backward(X, W, delta, stride=1, padding=0):
    """``(∂C/∂X, ∂C/∂W, ∂C/∂b)`` of :func:`conv2d`, given ``delta = ∂C/∂Z (n, F, OH, OW)``.

    ``∂C/∂W[f, c, u, v] = Σ_{n,i,j} δ[f, i, j] Xp[c, i·s + u, j·s + v]``,
    ``∂C/∂b[f] = Σ_{n,i,j} δ[f, i, j]``, and every window hands its δ back to the pixels it
    read: ``∂C/∂Xp[c, i·s + u, j·s + v] += Σ_f δ[f, i, j] W[f, c, u, v]``, then the padding
    is cut off.
    """
    (kh, kw), (sh, sw), (ph, pw) = W.shape[2:], _pair(stride), _pair(padding)
    Xp = _pad(X, (ph, pw))
    dW = np.einsum("nfij,ncijuv->fcuv", delta, _windows(Xp, kh, kw, (sh, sw)), optimize=True)
    db = delta.sum(axis=(0, 2, 3))
    # Per window position (u, v) the contributions land on a strided grid of Xp: no two
    # outputs (i, j) of one (u, v) share a pixel, so a slice += is exact.
    per_window = np.einsum("nfij,fcuv->ncuvij", delta, W, optimize=True)
    dXp = np.zeros_like(Xp)
    oh, ow = delta.shape[2:]
    for u in range(kh):
        for v in range(kw):
            dXp[:, :, u:u + sh * oh:sh, v:v + sw * ow:sw] += per_window[:, :, u, v]
    H, Wd = X.shape[2:]
    return dXp[:, :, ph:ph + H, pw:pw + Wd], dW, db


def maxpool2d(X, size, stride=None):
    """``Z[c, i, j] = max_{u,v} X[c, i·s + u, j·s + v]`` and where each maximum came from.

    ``X (n, C, H, W)`` -> ``(Z (n, C, OH, OW), argmax (n, C, OH, OW))``; ``size`` and
    ``stride`` (default: ``size``) are ints or pairs. ``argmax`` is the winner's flat index
    into its sample's input, ``c·H·W + y·W + x``. Ties go to the first maximum in row-major
    window order (smallest ``u``, then smallest ``v``), which is ``np.argmax``'s rule.
    """
    kh, kw = _pair(size)
    sh, sw = _pair(size if stride is None else stride)
    n, C, H, W = X.shape
    win = _windows(X, kh, kw, (sh, sw))
    oh, ow = win.shape[2:4]
    flat = win.reshape(n, C, oh, ow, kh * kw)
    k = flat.argmax(axis=4)
    Z = np.take_along_axis(flat, k[..., None], axis=4)[..., 0]
    u, v = np.divmod(k, kw)
    i = np.arange(oh)[:, None]
    j = np.arange(ow)[None, :]
    argmax = np.arange(C)[:, None, None] * (H * W) + (i * sh + u) * W + (j * sw + v)
    return Z, argmax


def maxpool2d_backward(delta, argmax, input_shape):
    """``∂C/∂X`` of :func:`maxpool2d`: each output's δ goes to its window's winner alone.

    ``delta`` and ``argmax`` are ``(n, C, OH, OW)``; ``input_shape`` is ``X.shape``. Where
    windows overlap (stride < size) one pixel can win several of them: its gradients add up.
    """
    n = input_shape[0]
    dX = np.zeros((n, int(np.prod(input_shape[1:]))), dtype=delta.dtype)
    rows = np.broadcast_to(np.arange(n)[:, None], (n, delta[0].size))
    np.add.at(dX, (rows, argmax.reshape(n, -1)), delta.reshape(n, -1))
    return dX.reshape(input_shape)


# --- the reference backend ----------------------------------------------------------------


class ReferenceBackend:
    """This module run as a :class:`fastmlp.network.Network` backend (``backend="numpy"``):
    the same methods as :class:`fastmlp._compiled.CompiledBackend`, over the network's public
    weights, biases and BatchNorm parameters. Sparse input is read densified."""

    def __init__(self, net):
        self.net = net

    def _args(self):
        net = self.net
        return net._weights, net._biases, net.activations

    def forward(self, X, training=False):
        net = self.net
        return forward(*self._args(), _dense(X), layers=net._layers, norms=net.batch_norms,
                       mode="batch" if training else "predict")[1][1:]

    def predict(self, X, Y=None, sample_weight=None, training=False):
        """``(summed (weighted) data cost or 0, ŷ)``."""
        net = self.net
        zs, acts = forward(*self._args(), _dense(X), layers=net._layers, norms=net.batch_norms,
                           mode="batch" if training else "predict")
        if Y is None:
            return 0.0, acts[-1]
        costs = sample_costs(self.net.cost, zs[-1], acts[-1], Y)
        return float(np.sum(costs if sample_weight is None else sample_weight * costs)), acts[-1]

    def gradient(self, X, Y, l2, sample_weight=None):
        """The gradient in the flat parameter layout (as the compiled backend's)."""
        net = self.net
        flat = np.zeros_like(net._params)
        pairs = gradients(*self._args(), net.cost, _dense(X), Y, l2,
                          sample_weight=sample_weight, layers=net._layers,
                          norms=net.batch_norms)
        for (p, q), (dp, dq) in zip(net._trainable_views(flat), pairs):
            p[...] = dp
            q[...] = dq
        return flat

    def trainer(self, X, Y, batch_size, optimizer, settings, sample_weight):
        return ReferenceTrainer(self.net, X, Y, batch_size, optimizer, settings, sample_weight)

    def check_training_state(self, state):
        """Nothing to check beyond Network's own checks: this backend keeps its optimizer
        state per parameter array, in :func:`update`'s own form."""


def _dense(X):
    """Checked input as a dense array (scipy sparse input densified)."""
    return X.toarray() if hasattr(X, "toarray") else X


class ReferenceTrainer:
    """:func:`train_epoch` with one fit's data and settings."""

    def __init__(self, net, X, Y, batch_size, optimizer, settings, sample_weight):
        self.net, self.X, self.Y, self.sample_weight = net, _dense(X), Y, sample_weight
        self.batch_size, self.optimizer, self.settings = batch_size, optimizer, settings
        self.state = net._optimizer_state_for(optimizer, dict)

    def prepare(self, verbose):
        return 0.0  # nothing to compile

    def epoch(self, order, lr, bar):
        net, s = self.net, self.settings
        cost, accuracy = train_epoch(
            net._weights, net._biases, net.activations, net.cost, self.X, self.Y, order,
            self.batch_size, lr, s["l2"], self.optimizer, self.state, s["dropout"], s["key"],
            layers=net._layers, sample_weight=self.sample_weight,
            l2_per_weight=s["l2_per_weight"], norms=net.batch_norms, augment=s.get("augment"),
            momentum=s["momentum"], nesterov=s["nesterov"], beta1=s["beta1"],
            beta2=s["beta2"], epsilon=s["eps"])
        bar.update(order.size)
        return cost, accuracy
