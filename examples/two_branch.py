"""A functional network with two branches for table rows (wide and deep): the features go both through
dense layers and straight to the output, which a keras.Sequential cannot say.

Use it as descent's network:  -P overrides="model.builder=examples/two_branch.py:build"
"""

from __future__ import annotations

import keras


def build(input_shape: tuple[int, ...], n_outputs: int, task: str) -> keras.Model:
    """A deep branch (two dense layers) and a wide one (the features themselves), joined before the output."""
    inputs = keras.Input(shape=input_shape, name="features")
    deep = keras.layers.Dense(64, activation="relu", name="deep_1")(inputs)
    deep = keras.layers.Dense(32, activation="relu", name="deep_2")(deep)
    joined = keras.layers.Concatenate(name="wide_and_deep")([inputs, deep])
    activation = "softmax" if task == "classification" else None
    outputs = keras.layers.Dense(n_outputs, activation=activation, name="output")(joined)
    return keras.Model(inputs, outputs, name="two_branch")
