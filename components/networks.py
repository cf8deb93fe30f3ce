"""Networks kept for the next variant: built and seeded once per process, compiled once per optimizer.

Building and seeding a network and tracing its training graph cost more than training a small variant (~0.3 s
on digits, where batch 32 trains 20 epochs in ~0.2 s). A sweep's worker trains many variants of one network:
it keeps the network (by architecture and seed) with its initial weights, and each optimizer (by name and
hyperparameters) with its initial state and compiled training graph, and puts both back before the next variant.
A variant trained on a kept network starts from exactly the weights and optimizer state a new one would.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable

import keras
import numpy as np

from components.optimizers import make_optimizer
from components.train import compile_model

KEEP_NETWORKS = 2  # a sweep has one network (one per seed with sweep.seeds); tests and notebooks build several
KEEP_OPTIMIZER_MB = 256  # optimizer state kept per process (Adam's is twice the network's weights)


def initial_network(key: object, build: Callable[[], keras.Model]) -> keras.Model:
    """The network `key` names (its architecture, input and seed), at its initial weights; `build` makes it once."""
    name = json.dumps(key, sort_keys=True, default=repr)
    if name in _NETWORKS:
        model, weights = _NETWORKS.pop(name)
        _NETWORKS[name] = model, weights  # the most recently used last
        _assign(model.variables, weights)
        return model
    fresh_session()
    model = build()
    _NETWORKS[name] = model, [v.numpy() for v in model.variables]
    while len(_NETWORKS) > KEEP_NETWORKS:
        dropped, _ = _NETWORKS.pop(next(iter(_NETWORKS)))
        for kept in [k for k, (m, *_) in _OPTIMIZERS.items() if m is dropped]:
            del _OPTIMIZERS[kept]
    return model


def compile_with(model: keras.Model, optimizer: str, hyper: dict, task: str) -> keras.Model:
    """`model` compiled (step 3 of the Keras workflow) with `optimizer`, its state as new: the optimizer object, and
    the training graph traced for it, of the last variant with the same optimizer and hyperparameters."""
    key = (id(model), optimizer, json.dumps(hyper, sort_keys=True), task)
    if key in _OPTIMIZERS:
        _, kept, state = _OPTIMIZERS.pop(key)
        _OPTIMIZERS[key] = model, kept, state
        _assign(kept.variables, state)
        return compile_model(model, kept, task)
    made = make_optimizer(optimizer, hyper)
    compile_model(model, made, task)
    made.build(model.trainable_variables)
    _OPTIMIZERS[key] = model, made, [v.numpy() for v in made.variables]
    while len(_OPTIMIZERS) > 1 and _kept_mb() > KEEP_OPTIMIZER_MB:
        del _OPTIMIZERS[next(iter(_OPTIMIZERS))]
    return model


def forget() -> None:
    """Drop every kept network and optimizer (the next variant builds its own)."""
    _NETWORKS.clear()
    _OPTIMIZERS.clear()


def fresh_session() -> None:
    """A clean Keras state before building a network, cheaply.

    Keras' clear_session collects garbage, which walks every object of the process: ~0.3 s with TensorFlow,
    MLflow and pandas loaded. The first call freezes what is alive then (imported modules and the data, alive
    for good), so later collections walk only what was made since.
    """
    if not _FROZEN:
        gc.collect()
        gc.freeze()
        _FROZEN.append(True)
    keras.backend.clear_session()


def _assign(variables: list, values: list[np.ndarray]) -> None:
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def _kept_mb() -> float:
    return sum(sum(v.nbytes for v in state) for *_, state in _OPTIMIZERS.values()) / 2**20


_NETWORKS: dict[str, tuple[keras.Model, list[np.ndarray]]] = {}
_OPTIMIZERS: dict[tuple, tuple[keras.Model, keras.optimizers.Optimizer, list[np.ndarray]]] = {}
_FROZEN: list[bool] = []
