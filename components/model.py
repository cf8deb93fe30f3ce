"""Build the network: the user's own (model.builder), or dense layers from one spec, Sequential or functional."""

from __future__ import annotations

import keras
import numpy as np

from components.builder import user_network
from components.errors import InputError

APIS = ("sequential", "functional")


def build_model(
    input_shape: int | tuple[int, ...],
    n_outputs: int,
    task: str,
    *,
    hidden: list[int],
    activation: str,
    dropout: float,
    api: str,
    seed: int,
    builder: str | None = None,
    keep_weights: bool = False,
    input_stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> keras.Model:
    """The network of `builder` when set; else dense layers of `hidden` units, then softmax classes or one
    linear output. Weights are drawn from `seed`: the same seed, the same initial weights.

    `input_shape` is the shape of one sample (an int: that many features). Samples of more than one
    dimension are flattened for the dense layers; `input_stats` (per-feature mean and variance of the
    training samples) standardise them in the network, for data no preprocessor scaled.
    """
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    if builder:
        return user_network(builder, shape, n_outputs, task, seed, keep_weights)
    if keep_weights:
        raise InputError(
            "model.keep_weights=true needs model.builder=path/to/model.keras: set it or remove keep_weights"
        )
    keras.utils.set_random_seed(seed)
    layers = _input_layers(shape, input_stats) + _layers(n_outputs, task, hidden, activation, dropout)
    if api == "sequential":
        return keras.Sequential([keras.Input(shape=shape, name="features"), *layers], name="descent")
    if api == "functional":
        inputs = keras.Input(shape=shape, name="features")
        x = inputs
        for layer in layers:
            x = layer(x)
        return keras.Model(inputs=inputs, outputs=x, name="descent")
    raise ValueError(f"unknown model api {api!r}: use one of {', '.join(APIS)}")


def check_activation(name: str) -> None:
    """Reject an activation Keras does not know, before any run starts."""
    try:
        keras.activations.get(name)
    except ValueError:
        raise InputError(f"unknown activation {name!r}: use a Keras activation such as relu, tanh or sigmoid") from None


def _input_layers(shape: tuple[int, ...], stats: tuple[np.ndarray, np.ndarray] | None) -> list:
    layers: list = [keras.layers.Flatten(name="flatten")] if len(shape) > 1 else []
    if stats is not None:
        layers.append(keras.layers.Normalization(mean=stats[0], variance=stats[1], name="standardise"))
    return layers


def _layers(n_outputs: int, task: str, hidden: list[int], activation: str, dropout: float) -> list:
    layers: list = []
    for i, units in enumerate(hidden, start=1):
        layers.append(keras.layers.Dense(units, activation=activation, name=f"hidden_{i}"))
        if dropout > 0:
            layers.append(keras.layers.Dropout(dropout, name=f"dropout_{i}"))
    output = "softmax" if task == "classification" else None
    layers.append(keras.layers.Dense(n_outputs, activation=output, name="output"))
    return layers
