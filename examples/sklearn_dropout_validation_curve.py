"""Dropout in the scikit-learn drop-in: its effect on a validation curve.

    pip install "fastmlp[sklearn]"        # matplotlib too, for the plot
    python examples/sklearn_dropout_validation_curve.py [--plot curve.png]

scikit-learn's MLPClassifier has no dropout (scikit-learn issue #6175); fastmlp's takes
``dropout=p``: during training every hidden unit is zeroed with probability p and the kept ones
are scaled by 1/(1-p), so prediction is unchanged. A wide network trained long on few samples
overfits: training accuracy reaches 100 % while validation accuracy stalls. scikit-learn's
``validation_curve`` shows what dropout does to that gap, 5-fold cross-validated, with no other
change to the estimator (alpha, the L2 penalty, is left at its default).
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold, validation_curve

from fastmlp.sklearn import MLPClassifier

RATES = [0.0, 0.2, 0.4, 0.6]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", metavar="PNG", help="also save the curve (matplotlib)")
    args = parser.parse_args()

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)  # float32: fastmlp's fast path
    X, y = X[:600], y[:600]  # few samples, a wide network: room to overfit
    model = MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=80, n_iter_no_change=80,
                          learning_rate_init=1e-3, random_state=0)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        train, valid = validation_curve(model, X, y, param_name="dropout", param_range=RATES,
                                        cv=StratifiedKFold(5, shuffle=True, random_state=0))
    seconds = time.perf_counter() - started
    print(f"digits, {len(y)} samples, 64-256-256-10, adam, 80 epochs, 5-fold CV "
          f"({seconds:.0f} s)\n")
    print("dropout  train acc  validation acc (mean ± std)")
    for rate, tr, va in zip(RATES, train, valid):
        print(f"  {rate:.1f}     {tr.mean():.4f}     {va.mean():.4f} ± {va.std():.4f}")
    best = RATES[int(np.argmax(valid.mean(axis=1)))]
    print(f"\nbest validation accuracy at dropout={best}")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for scores, label in ((train, "training"), (valid, "validation")):
            mean, std = scores.mean(axis=1), scores.std(axis=1)
            ax.plot(RATES, mean, marker="o", label=label)
            ax.fill_between(RATES, mean - std, mean + std, alpha=0.2)
        ax.set(xlabel="dropout", ylabel="accuracy",
               title="fastmlp.sklearn.MLPClassifier: validation curve")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"saved {args.plot}")


if __name__ == "__main__":
    main()
