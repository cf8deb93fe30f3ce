"""A small convolutional network for digits_images (8 x 8 x 1), written with the functional API.

Use it as descent's network:  -P overrides="model.builder=examples/digits_cnn.py:build data.source=digits_images"
"""

from __future__ import annotations

import keras


def build(input_shape: tuple[int, ...], n_outputs: int, task: str) -> keras.Model:
    """Two 3x3 convolutions, a 2x2 pooling, one dense layer: descent compiles and trains it per variant."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(1 / 16, name="scale")(inputs)  # digits' pixels are 0-16; scaling is the model's job
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_1")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv_2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)  # 8x8 -> 4x4
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="dense")(x)
    activation = "softmax" if task == "classification" else None  # class probabilities, or one value
    outputs = keras.layers.Dense(n_outputs, activation=activation, name="output")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")
