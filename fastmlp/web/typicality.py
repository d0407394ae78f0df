"""Is a drawing digit-like at all? A cheap, honest check for the draw page's hint.

A network trained on MNIST answers one of 0-9 for anything, a drawn house included, often
with high confidence (its softmax says which digit is *closest*, not whether the drawing is a
digit). Handwritten digits, though, lie close to a low-dimensional linear subspace of the
28x28 images: :class:`DigitSpace` keeps MNIST's mean and its first principal components and
measures how far an image lies from that subspace (the norm of what the components cannot
reconstruct). The threshold is a percentile of that distance over MNIST digits held out from
the fit (by default the 98th: 2 % of real digits are called unlike digits too).

What it catches, measured on drawings made like the page's (tests/test_web_hint.py): houses,
boxes, stars, smileys, spirals, suns, crosses and grids; it misses some shapes built from
digit-like strokes (a letter A, a tree). It is a hint, never a verdict.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DigitSpace"]

COMPONENTS = 40  #: principal components kept: ~79 % of MNIST's pixel variance
PERCENTILE = 98.0  #: held-out digits farther than the threshold: 100 - PERCENTILE percent


class DigitSpace:
    """MNIST's mean and principal components, and a distance threshold from held-out digits.

    ``distance(image)`` is how far a 28x28 image (as :func:`fastmlp.images.to_mnist` makes
    it) lies from the digits' subspace; ``is_unlike(image)`` compares it with the threshold.
    """

    def __init__(self, mean, components, threshold, percentile=PERCENTILE):
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.components = np.asarray(components, dtype=np.float64)
        self.threshold = float(threshold)
        self.percentile = float(percentile)

    @classmethod
    def from_images(cls, X, components=COMPONENTS, fit=10_000, held_out=5_000,
                    percentile=PERCENTILE):
        """Fit on the first ``fit`` rows of ``X`` (n, 784), set the threshold at the
        ``percentile`` of the distances of the next ``held_out`` rows."""
        if len(X) < fit + held_out:
            raise ValueError(f"need {fit + held_out} images, got {len(X)}")
        X = np.asarray(X[:fit + held_out], dtype=np.float64).reshape(fit + held_out, -1)
        train, check = X[:fit], X[fit:]
        mean = train.mean(axis=0)
        centred = train - mean
        # the leading eigenvectors of the (784, 784) scatter matrix: cheaper than an SVD of X
        vectors = np.linalg.eigh(centred.T @ centred)[1]
        space = cls(mean, vectors[:, ::-1][:, :components].T, 0.0, percentile)
        space.threshold = float(np.percentile(space.distance(check), percentile))
        return space

    @classmethod
    def from_mnist(cls, data_dir=None):
        """From the MNIST training images in the data folder (never downloads); None when
        they cannot be read."""
        from ..datasets import load_mnist

        try:
            X = load_mnist(data_dir, download=False, progress=False)[0]
        except Exception:  # noqa: BLE001 - no data, damaged data: no hint, the page works
            return None
        return cls.from_images(X)

    def distance(self, images) -> np.ndarray:
        """Distance of each image (one 28x28 image, or rows of 784) from the subspace."""
        Z = np.asarray(images, dtype=np.float64).reshape(-1, self.mean.size) - self.mean
        residual = Z - (Z @ self.components.T) @ self.components
        return np.linalg.norm(residual, axis=1)

    def is_unlike(self, image) -> bool:
        return bool(self.distance(image)[0] > self.threshold)

