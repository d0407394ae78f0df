"""A multilayer perceptron in plain numpy: the math, and the ground truth for the kernels.

Notation, for one sample (a column vector):

    a⁰ = x,    zˡ = Wˡ aˡ⁻¹ + bˡ,    aˡ = fˡ(zˡ),    ŷ = aᴸ

``Wˡ`` has shape ``(n_out, n_in)``. A mini-batch holds one sample per *row*, so the same line
reads ``Z = A Wᵀ + b``. Backpropagation is the chain rule, one layer at a time:

    δᴸ = ∂C/∂zᴸ                             (softmax + cross-entropy: (ŷ - y) / n)
    ∂C/∂Wˡ = δˡᵀ aˡ⁻¹ (+ l2 Wˡ),   ∂C/∂bˡ = Σ_samples δˡ
    δˡ⁻¹ = (δˡ Wˡ) ⊙ fˡ⁻¹'(aˡ⁻¹)

Every function here is vectorized over the batch and takes the parameters as lists of arrays
in the public layout. This is ``Network(backend="numpy")``, and the compiled kernels in
:mod:`fastmlp.kernels` are tested against it.
"""

import numpy as np

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
}
COSTS = ("cross_entropy", "mse", "binary_cross_entropy")
# Each cost's output activation, where it needs one: these pairs have δᴸ = (ŷ - y) / n.
OUTPUT_FOR_COST = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}


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


# --- forward ------------------------------------------------------------------------------


def forward(weights, biases, activations, X, dropout=0.0, key=0, step=0):
    """Return ``(zs, acts)``: every layer's pre-activation and ``[a⁰ = X, a¹, ..., aᴸ]``.

    With ``dropout > 0`` (training) hidden activations are multiplied by their dropout mask.
    """
    zs, acts = [], [X]
    a = X
    last = len(weights) - 1
    for layer, (W, b, name) in enumerate(zip(weights, biases, activations)):
        z = a @ W.T + b
        a = ACTIVATIONS[name][0](z)
        if dropout and layer < last:
            a = a * dropout_mask(dropout, key, step, layer, a.shape, a.dtype)
        zs.append(z)
        acts.append(a)
    return zs, acts


def predict_proba(weights, biases, activations, X):
    return forward(weights, biases, activations, X)[1][-1]


# --- cost ---------------------------------------------------------------------------------


def loss(weights, biases, activations, cost, X, Y, l2=0.0):
    """Mean cost over the batch, plus ``l2/2 Σ‖W‖²``. ``Y`` holds one target row per sample."""
    zs, acts = forward(weights, biases, activations, X)
    return batch_loss(cost, zs[-1], acts[-1], Y) + l2_penalty(weights, l2)


def l2_penalty(weights, l2):
    if l2 == 0:
        return 0.0
    return 0.5 * l2 * float(sum(np.sum(W.astype(np.float64) ** 2) for W in weights))


def output_delta(cost, activation, out, Y):
    """δᴸ = ∂C/∂zᴸ for the mean cost over the batch."""
    n = out.shape[0]
    if cost in OUTPUT_FOR_COST:
        # Softmax + cross-entropy, sigmoid + binary cross-entropy: the activation's Jacobian
        # and the 1/ŷ of the log cancel exactly.
        return (out - Y) / out.dtype.type(n)
    grad_out = 2 * (out - Y) / out.dtype.type(out.size)
    return activation_backward(activation, out, grad_out)


# --- backward -----------------------------------------------------------------------------


def gradients(weights, biases, activations, cost, X, Y, l2=0.0, forward_pass=None,
              dropout=0.0, key=0, step=0):
    """Return ``[(∂C/∂W, ∂C/∂b), ...]`` for every layer, by the chain rule.

    ``forward_pass`` may carry ``(zs, acts)`` already computed (training reuses it for the
    loss); with dropout it must be the pass made with the same ``dropout, key, step``.
    """
    if forward_pass is None:
        forward_pass = forward(weights, biases, activations, X, dropout, key, step)
    zs, acts = forward_pass
    delta = output_delta(cost, activations[-1], acts[-1], Y)
    grads = [None] * len(weights)
    for layer in reversed(range(len(weights))):
        W = weights[layer]
        dW = delta.T @ acts[layer]
        if l2:
            dW = dW + W.dtype.type(l2) * W
        grads[layer] = (dW, delta.sum(axis=0))
        if layer > 0:
            below = layer - 1
            grad_a = delta @ W
            a = acts[layer]
            if dropout:
                # a = f(z) ⊙ mask: the gradient passes through the mask, and f' is taken at
                # the activation before dropout.
                grad_a = grad_a * dropout_mask(dropout, key, step, below, a.shape, a.dtype)
                a = ACTIVATIONS[activations[below]][0](zs[below])
            delta = activation_backward(activations[below], a, grad_a)
    return grads


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
                l2=0.0, optimizer="sgd", state=None, dropout=0.0, key=0, **hyper):
    """One pass over ``X[order]`` in mini-batches.

    Returns ``(mean training cost, fraction of samples classified right)``, both measured
    on each batch just before its update (with dropout on), as the compiled loop does.
    """
    state = {} if state is None else state
    total, correct = 0.0, 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        xb, yb = X[idx], Y[idx]
        step = state.get("step", 0)
        zs, acts = forward(weights, biases, activations, xb, dropout, key, step)
        total += batch_loss(cost, zs[-1], acts[-1], yb) * len(idx)
        correct += int(np.sum(classified_right(cost, acts[-1], yb)))
        grads = gradients(weights, biases, activations, cost, xb, yb, l2, (zs, acts),
                          dropout, key, step)
        flat_grads = [g for pair in grads for g in pair]
        params = [p for pair in zip(weights, biases) for p in pair]
        update(optimizer, params, flat_grads, state, learning_rate, **hyper)
    return total / len(order), correct / len(order)


def classified_right(cost, out, Y):
    """Per sample: the same argmax in ŷ and the targets or, for independent sigmoid outputs
    (binary cross-entropy), every output on the same side of 0.5 as its target."""
    if cost == "binary_cross_entropy":
        return np.all((out > 0.5) == (Y > 0.5), axis=1)
    return out.argmax(axis=1) == Y.argmax(axis=1)


def batch_loss(cost, z_out, out, Y):
    """The data part of the cost (no l2) from a forward pass already made."""
    if cost == "cross_entropy":
        # log ŷ from z directly (log-softmax): finite even where ŷ underflows to 0.
        return float(-np.sum(Y * log_softmax(z_out)) / len(Y))
    if cost == "binary_cross_entropy":
        # -[y log σ(z) + (1-y) log(1-σ(z))] = y softplus(-z) + (1-y) softplus(z), summed over
        # outputs, averaged over samples (scikit-learn's binary log-loss).
        return float(np.sum(Y * np.logaddexp(0, -z_out) + (1 - Y) * np.logaddexp(0, z_out))
                     / len(Y))
    return float(np.mean((out - Y) ** 2))
