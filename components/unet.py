"""The UNet of the original project: an encoder-decoder with skip connections.

Depth, width and convolution type are parameters so that one builder gives the
plain UNet and a lighter depthwise-separable variant for CPUs.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
from keras import layers

from components.architecture import ARCHITECTURE_KEYS, ENCODERS
from components.effnet_unet import build_effnet_unet


def _conv_block(x, filters: int, separable: bool):
    conv = layers.SeparableConv2D if separable else layers.Conv2D
    for _ in range(2):
        x = conv(filters, 3, padding="same", use_bias=False)(x)
        # Short CPU runs: moving statistics must settle within a few hundred steps.
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.Activation("relu")(x)
    return x


def build_unet(
    height: int, width: int, filters: int = 16, depth: int = 4, separable: bool = False
) -> keras.Model:
    """Takes RGB in [0, 1]; returns the person probability, shape (H, W, 1)."""
    if height % 2**depth or width % 2**depth:
        raise ValueError(f"input {height}x{width} must be divisible by 2**depth = {2**depth}")
    inputs = keras.Input((height, width, 3), name="pixels")
    x = inputs
    skips = []
    for level in range(depth):
        x = _conv_block(x, filters * 2**level, separable)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = _conv_block(x, filters * 2**depth, separable)
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(filters * 2**level, 2, strides=2, padding="same")(x)
        x = layers.Concatenate()([x, skips[level]])
        x = _conv_block(x, filters * 2**level, separable)
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="person")(x)
    name = f"unet{'_sep' if separable else ''}_f{filters}_d{depth}"
    return keras.Model(inputs, outputs, name=name)


def with_input_size(model: keras.Model, height: int, width: int) -> keras.Model:
    """The same layers and weights at another input size, e.g. 192x256 for a 256x192
    model.  Every layer is convolutional or global, so the network runs at any size
    its strides divide."""
    inputs = keras.tree.map_structure(
        lambda tensor: keras.Input((height, width, 3), name=tensor.name), model.input
    )
    return keras.models.clone_model(model, input_tensors=inputs, clone_function=lambda layer: layer)


def build_configured_unet(
    settings: Mapping[str, object], pretrained_weights: bool = True
) -> keras.Model:
    """The UNet the pipeline's settings describe, for the trainer and the benchmarks
    alike (``unet_*`` and ``separable`` shape only the UNet's own encoder, ``effnet_*``
    only EfficientNet's)."""
    encoder, height, width, filters, depth, separable, stride, full_resolution = (
        settings[k] for k in ARCHITECTURE_KEYS
    )
    if encoder.startswith("efficientnet-"):
        variant = encoder.removeprefix("efficientnet-")
        return build_effnet_unet(
            height, width, pretrained_weights, stride, full_resolution, variant
        )
    if encoder != "unet":
        raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, not {encoder!r}")
    return build_unet(height, width, filters, depth, separable)
