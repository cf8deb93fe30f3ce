"""Build the network from one spec, with keras.Sequential or with the functional API."""

from __future__ import annotations

import keras

from components.errors import InputError

APIS = ("sequential", "functional")


def build_model(
    n_features: int,
    n_outputs: int,
    task: str,
    *,
    hidden: list[int],
    activation: str,
    dropout: float,
    api: str,
    seed: int,
) -> keras.Model:
    """Dense layers of `hidden` units, then softmax classes or one linear output; weights seeded."""
    keras.utils.set_random_seed(seed)
    layers = _layers(n_outputs, task, hidden, activation, dropout)
    if api == "sequential":
        return keras.Sequential([keras.Input(shape=(n_features,), name="features"), *layers], name="descent")
    if api == "functional":
        inputs = keras.Input(shape=(n_features,), name="features")
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


def _layers(n_outputs: int, task: str, hidden: list[int], activation: str, dropout: float) -> list:
    layers: list = []
    for i, units in enumerate(hidden, start=1):
        layers.append(keras.layers.Dense(units, activation=activation, name=f"hidden_{i}"))
        if dropout > 0:
            layers.append(keras.layers.Dropout(dropout, name=f"dropout_{i}"))
    output = "softmax" if task == "classification" else None
    layers.append(keras.layers.Dense(n_outputs, activation=output, name="output"))
    return layers
