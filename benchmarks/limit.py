"""Throughput at batch sizes 1 and 32: descent's training loop against the practical limit.

The limit is a hand-written loop compiled once per epoch (one `tf.function` running every update of
the epoch), with no metrics and no tracking; descent's is `components.train.fit_variant`. Both train
the default digits network with Adam, in this one process, alternating, on `--threads` threads; and the
bare loop's seconds per epoch at every batch size of the default grid (the compute floor). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time


def limit_loop(model, optimizer, x, y, batch_size: int, epochs: int) -> list[float]:  # noqa: ANN001
    """Seconds per epoch of the bare compiled-epoch loop."""
    import keras
    import numpy as np
    import tensorflow as tf

    loss = keras.losses.get("sparse_categorical_crossentropy")
    steps, weights = math.ceil(len(y) / batch_size), model.trainable_variables

    @tf.function
    def epoch(x: tf.Tensor, y: tf.Tensor, order: tf.Tensor) -> tf.Tensor:
        last = tf.constant(0.0)
        for step in tf.range(steps):
            rows = order[step * batch_size : (step + 1) * batch_size]
            with tf.GradientTape() as tape:
                last = tf.reduce_mean(loss(tf.gather(y, rows), model(tf.gather(x, rows), training=True)))
            optimizer.apply_gradients(zip(tape.gradient(last, weights), weights, strict=True))
        return last

    x, y, rng, times = tf.constant(x), tf.constant(y), np.random.default_rng(0), []
    for _ in range(epochs):
        order = tf.constant(rng.permutation(len(y)).astype("int32"))
        started = time.perf_counter()
        float(epoch(x, y, order))
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    """Measure both loops at batch sizes 1 and 32 and print steps per second (after the compiled first epoch)."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="TensorFlow's threads: 1 = a worker's share of two cores")
    args = p.parse_args()
    from pipelines.workers import use_cores

    use_cores(args.threads)
    import keras

    from benchmarks.common import prepared_digits
    from components.model import build_model
    from components.optimizers import make_optimizer
    from components.train import compile_model, fit_variant

    arrays, _, _, hyper = prepared_digits()
    n = len(arrays.y_train)

    def network() -> keras.Model:
        keras.backend.clear_session()
        return build_model(
            arrays.x_train.shape[1],
            10,
            "classification",
            hidden=[128, 64],
            activation="relu",
            dropout=0.0,
            api="sequential",
            seed=0,
        )

    out: dict = {}
    for batch_size in (1, 32):
        steps = math.ceil(n / batch_size)
        limit, ours, compile_limit, compile_ours = [], [], [], []
        for _ in range(args.rounds):
            model = network()
            times = limit_loop(
                model, make_optimizer("adam", hyper["adam"]), arrays.x_train, arrays.y_train, batch_size, args.epochs
            )
            limit.append(steps / statistics.median(times[1:]))
            compile_limit.append(times[0] - statistics.median(times[1:]))
            model = network()
            compile_model(model, make_optimizer("adam", hyper["adam"]), "classification")
            fit = fit_variant(model, arrays, batch_size, args.epochs)
            steady = statistics.median(h["epoch_train_seconds"] for h in fit.history[1:])
            ours.append(steps / steady)
            compile_ours.append(fit.history[0]["epoch_train_seconds"] - steady)
            out[f"descent_epoch_seconds_bs{batch_size}"] = steady
        out[f"limit_steps_per_second_bs{batch_size}"] = statistics.median(limit)
        out[f"descent_steps_per_second_bs{batch_size}"] = statistics.median(ours)
        out[f"limit_compile_seconds_bs{batch_size}"] = statistics.median(compile_limit)
        out[f"descent_compile_seconds_bs{batch_size}"] = statistics.median(compile_ours)
    # The bare loop's seconds per epoch at every batch size of the default grid: the compute floor of a sweep.
    out["limit_epoch_seconds"] = {}
    for size in (1, 32, 256, n):
        epochs = []
        for _ in range(args.rounds):
            times = limit_loop(network(), make_optimizer("adam", hyper["adam"]), arrays.x_train, arrays.y_train, size,
                               args.epochs)  # fmt: skip
            epochs.append(statistics.median(times[1:]))
        out["limit_epoch_seconds"]["full" if size == n else str(size)] = statistics.median(epochs)
    out["threads"] = args.threads
    print(json.dumps(out))


if __name__ == "__main__":
    main()
