"""The plain peer: a Python loop over the variants with `mlflow.keras.autolog()`, as a user would write it.

One nested MLflow run per variant, `model.fit` with its defaults; prints one JSON line of results.
"""

from __future__ import annotations

import json
import time

from benchmarks.common import grid_arguments, keras_optimizer, prepared_digits, variant_name


def main() -> None:
    """Run the peer loop over the grid and print its wall time and test accuracies as JSON."""
    args = grid_arguments(__doc__)
    started = time.perf_counter()
    import keras
    import mlflow

    arrays, test_x, test_y, hyper = prepared_digits()
    mlflow.keras.autolog()
    accuracies = {}
    with mlflow.start_run(run_name="peer-sweep"):
        for name in args.optimizers.split(","):
            for size in args.batch_sizes.split(","):
                batch = len(arrays.y_train) if size == "full" else int(size)
                with mlflow.start_run(run_name=variant_name(name, size), nested=True):
                    keras.utils.set_random_seed(0)
                    model = keras.Sequential(
                        [
                            keras.Input((arrays.x_train.shape[1],)),
                            keras.layers.Dense(128, activation="relu"),
                            keras.layers.Dense(64, activation="relu"),
                            keras.layers.Dense(10, activation="softmax"),
                        ]
                    )
                    model.compile(
                        optimizer=keras_optimizer(name, hyper[name]),
                        loss="sparse_categorical_crossentropy",
                        metrics=["accuracy"],
                    )
                    model.fit(
                        arrays.x_train,
                        arrays.y_train,
                        batch_size=batch,
                        epochs=args.epochs,
                        validation_data=(arrays.x_val, arrays.y_val),
                        verbose=0,
                    )
                    _, accuracy = model.evaluate(test_x, test_y, verbose=0)
                    mlflow.log_metric("test_accuracy", accuracy)
                    accuracies[variant_name(name, size)] = float(accuracy)
    print(json.dumps({"seconds": time.perf_counter() - started, "test_accuracy": accuracies}))


if __name__ == "__main__":
    main()
