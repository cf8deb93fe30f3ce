"""scikit-learn's MLPClassifier on the same rows, for the variants it supports (sgd, momentum, nesterov, adam).

Prints one JSON line: seconds and test accuracy per variant, and seconds per epoch at batch size 32.
"""

from __future__ import annotations

import json
import time
import warnings

SUPPORTED = {
    "sgd": {"solver": "sgd", "momentum": 0.0, "nesterovs_momentum": False},
    "momentum": {"solver": "sgd", "momentum": 0.9, "nesterovs_momentum": False},
    "nesterov": {"solver": "sgd", "momentum": 0.9, "nesterovs_momentum": True},
    "adam": {"solver": "adam"},
}


def main() -> None:
    """Fit every supported optimizer x batch size for a fixed number of epochs (no early stopping)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from benchmarks.common import grid_arguments, prepared_digits, variant_name

    args = grid_arguments(__doc__)

    arrays, test_x, test_y, hyper = prepared_digits()
    n = len(arrays.y_train)
    seconds, accuracy = {}, {}
    for name in (o for o in args.optimizers.split(",") if o in SUPPORTED):
        solver = SUPPORTED[name]
        for size in args.batch_sizes.split(","):
            mlp = MLPClassifier(
                hidden_layer_sizes=(128, 64),
                batch_size=n if size == "full" else int(size),
                learning_rate_init=float(hyper[name]["learning_rate"]),
                max_iter=args.epochs,
                tol=0.0,
                n_iter_no_change=args.epochs + 1,
                alpha=0.0,
                random_state=0,
                **solver,
            )
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                mlp.fit(arrays.x_train, arrays.y_train)
            seconds[variant_name(name, size)] = time.perf_counter() - started
            accuracy[variant_name(name, size)] = float(mlp.score(test_x, test_y))
    print(json.dumps({"seconds": seconds, "test_accuracy": accuracy, "epochs": args.epochs}))


if __name__ == "__main__":
    main()
