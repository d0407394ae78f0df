"""Train a network on MNIST, watch it learn, test it, save it.

    python examples/train_mnist.py

The first run downloads MNIST (about 11 MB) into the data folder ($FASTMLP_DATA, else the
user cache folder) and compiles the kernels (about 100 s on a 2-vCPU machine, once); later
runs start at once. The model is saved as models/mnist_example.npz (git ignores models/).
The command line does the same and more: `fastmlp train --help`.
"""

import time
from pathlib import Path

from fastmlp import Network
from fastmlp.datasets import load_mnist

# 60000 training and 10000 test images: X is float32 in [0, 1], shape (n, 784); y is 0..9.
X_train, y_train, X_test, y_test = load_mnist()

# Hold out the last twelfth of the training images (5000) to watch for overfitting. The
# test set stays untouched until the very end: it is only fair as long as nothing was tuned
# on it.
split = len(X_train) - len(X_train) // 12
X_fit, y_fit = X_train[:split], y_train[:split]
X_val, y_val = X_train[split:], y_train[split:]

# 784 pixels in, two ReLU hidden layers, 10 softmax outputs (one per digit).
net = Network([784, 256, 128, 10], seed=0)

started = time.perf_counter()
history = net.fit(
    X_fit, y_fit,
    epochs=8,
    batch_size=128,
    learning_rate=1e-3,
    optimizer="adam",
    schedule="cosine",  # the step size shrinks smoothly to zero over the 8 epochs
    validation_data=(X_val, y_val),
)
print(f"trained in {time.perf_counter() - started:.1f} s")
print("validation accuracy per epoch: "
      + ", ".join(f"{a:.4f}" for a in history.val_accuracy))

scores = net.evaluate(X_test, y_test)
print(f"test accuracy {100 * scores['accuracy']:.2f} %  (loss {scores['loss']:.4f})")

# The first few test digits, as the network sees them.
print("predicted:", net.predict(X_test[:10]))
print("true:     ", y_test[:10])

# Into models/ (git ignores it, as it does fastmlp train's models), not the current folder.
out = Path("models") / "mnist_example.npz"
out.parent.mkdir(exist_ok=True)
net.save(out)  # load it back with Network.load("models/mnist_example.npz")
print(f"saved {out} -- try: fastmlp serve --model {out}")
