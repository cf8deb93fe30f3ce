"""Would training a variant's learning-rate trials as one stacked model pay? Measured on digits at batch size 1.

A grid search's first rung trains every trial (5 learning rates) for the same epochs from the same weights and
rows. descent trains them one after the other on one compiled Trainer (pipelines/tune.py). The alternative: the 5
networks as one, their weights stacked (a batched matrix product per layer), each with its own learning rate,
updated together in one compiled epoch. This times, in this one process and alternating, an epoch of:
- `descent`: the 5 trials one after the other through descent's Trainer (Adam, every validation check and
  measurement switched off but its own), per trial;
- `bare`: one network in a bare compiled-epoch loop (benchmarks/limit.py's, Adam written out);
- `stacked`: the 5 networks stacked in that same loop.
Prints one JSON line: seconds per epoch of each, and what stacking would save on a trial's epoch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

TRIALS = 5


def stacked_loop(x, y, hidden: list[int], rates: list[float], epochs: int, seed: int = 0) -> list[float]:  # noqa: ANN001
    """Seconds per epoch of len(rates) dense networks trained at once, each with its own Adam learning rate."""
    import numpy as np
    import tensorflow as tf

    k, rng = len(rates), np.random.default_rng(seed)
    sizes = [x.shape[1], *hidden, int(y.max()) + 1]
    weights = []
    for fan_in, fan_out in zip(sizes, sizes[1:], strict=False):
        limit = np.sqrt(6 / (fan_in + fan_out))  # Glorot uniform, as Keras' Dense
        one = rng.uniform(-limit, limit, (fan_in, fan_out)).astype("float32")
        weights += [tf.Variable(np.repeat(one[None], k, 0)), tf.Variable(np.zeros((k, 1, fan_out), "float32"))]
    moments = [(tf.Variable(tf.zeros_like(w)), tf.Variable(tf.zeros_like(w))) for w in weights]
    lr = tf.constant(np.array(rates, "float32").reshape(k, 1, 1))
    steps = tf.Variable(0.0)

    @tf.function(autograph=False)
    def epoch(x: tf.Tensor, y: tf.Tensor, order: tf.Tensor) -> tf.Tensor:
        def update(i: tf.Tensor) -> tuple:
            rows = order[i : i + 1]
            with tf.GradientTape() as tape:
                h = tf.tile(tf.gather(x, rows)[None], [k, 1, 1])
                for layer in range(0, len(weights), 2):
                    h = tf.matmul(h, weights[layer]) + weights[layer + 1]
                    h = tf.nn.relu(h) if layer < len(weights) - 2 else h
                labels = tf.tile(tf.gather(y, rows)[None], [k, 1])
                loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, h))
            steps.assign_add(1.0)
            t = steps.read_value()
            correction = tf.sqrt(1 - 0.999**t) / (1 - 0.9**t)
            for w, g, (m, v) in zip(weights, tape.gradient(loss, weights), moments, strict=True):
                m.assign(0.9 * m + 0.1 * g)
                v.assign(0.999 * v + 0.001 * tf.square(g))
                w.assign_sub(lr * correction * m / (tf.sqrt(v) + 1e-7))
            return (i + 1,)

        return tf.while_loop(lambda i: i < tf.shape(order)[0], update, (tf.constant(0),), parallel_iterations=1)[0]

    x, y, times = tf.constant(x), tf.constant(y), []
    for e in range(epochs):
        order = tf.constant(np.random.default_rng([seed, e]).permutation(len(y)).astype("int32"))
        started = time.perf_counter()
        epoch(x, y, order).numpy()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    """Time the three ways, alternating, `--rounds` times; medians of the epochs after the first (compilation)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    from benchmarks.common import prepared_digits
    from components.model import build_model
    from components.optimizers import make_optimizer
    from components.train import Trainer, compile_model
    from components.tuning import log_grid
    from pipelines.workers import use_cores

    use_cores(1)  # a worker's share of two cores
    arrays, _, _, hyper = prepared_digits()
    x, y = arrays.x_train, arrays.y_train
    rates = log_grid(hyper["adam"]["learning_rate"], [0.1, 0.3, 1, 3, 10])
    seconds: dict[str, list[float]] = {"descent": [], "bare": [], "stacked": []}
    for _ in range(args.rounds):
        model = build_model(x.shape[1], 10, "classification", hidden=[128, 64], activation="relu", dropout=0.0,
                            api="sequential", seed=0)  # fmt: skip
        compile_model(model, make_optimizer("adam", hyper["adam"]), "classification")
        trainer = Trainer(model, arrays, 1)
        for lr in rates:
            run = trainer.start(lr)
            trainer.train(run, args.epochs)
            seconds["descent"].append(statistics.median(h["epoch_train_seconds"] for h in run.history[1:]))
            trainer.release(run)
        seconds["bare"].append(statistics.median(stacked_loop(x, y, [128, 64], rates[:1], args.epochs)[1:]))
        seconds["stacked"].append(statistics.median(stacked_loop(x, y, [128, 64], rates, args.epochs)[1:]))
    per_epoch = {k: statistics.median(v) for k, v in seconds.items()}
    print(
        json.dumps(
            {
                "trials": len(rates),
                "updates_per_epoch": len(y),
                "seconds_per_epoch": per_epoch,
                # a trial's epoch stacked, against one of descent's trials one after the other
                "stacked_share_of_a_trial_epoch": per_epoch["stacked"] / len(rates) / per_epoch["descent"],
            }
        )
    )


if __name__ == "__main__":
    main()
