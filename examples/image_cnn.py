"""A small convolutional network for a folder of images of any size (pixels 0-255), with the functional API.

Use it as descent's network:
  -P overrides="model.builder=examples/image_cnn.py:build data.source=path/to/images data.image_size=[64,64]"
"""

from __future__ import annotations

import keras


def build(input_shape: tuple[int, ...], n_outputs: int, task: str) -> keras.Model:
    """Two convolution blocks, global average pooling (any image size), one output layer."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(1 / 255, name="scale")(inputs)  # image files hold 0-255; scaling is the model's job
    for i, filters in enumerate((16, 32), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv_{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="average")(x)
    activation = "softmax" if task == "classification" else None
    outputs = keras.layers.Dense(n_outputs, activation=activation, name="output")(x)
    return keras.Model(inputs, outputs, name="image_cnn")
