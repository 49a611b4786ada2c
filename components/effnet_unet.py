"""A UNet whose encoder is ImageNet-pretrained EfficientNet-Lite0, for CPUs.

Lite0 is EfficientNet-B0 made for phones: ReLU6, no squeeze-excitation, so
every layer is a plain convolution that runs fast on 2 cores.  The encoder stops
at stride 16 (block 10, 112 channels) or at stride 32 (block 12, 192 channels,
for more context at 1 ms more); the last three blocks would double the weights
and push the SavedModel past 10 MB.  The decoder is the Keras U-Net's, made
light: LR-ASPP context at the encoder's stride, then bilinear upsampling, a skip
and one depthwise-separable convolution per level, and at the end the input
photo itself for sharp edges.  Stopping that last level at half resolution
saves 4 of 22 ms at 256x192 (before BatchNorm folding); the client's guided
filter then draws the edges from the photo.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from components import pretrained
from components.architecture import EFFNET_LAST_BLOCK

# (expansion, kernel, stride, output channels) of Lite0's blocks 0..12.
_BLOCKS = (
    (1, 3, 1, 16),
    (6, 3, 2, 24),
    (6, 3, 1, 24),
    (6, 5, 2, 40),
    (6, 5, 1, 40),
    (6, 3, 2, 80),
    (6, 3, 1, 80),
    (6, 3, 1, 80),
    (6, 5, 1, 112),
    (6, 5, 1, 112),
    (6, 5, 1, 112),
    (6, 5, 2, 192),
    (6, 5, 1, 192),
)
_SKIP_BLOCKS = {0: 2, 2: 4, 4: 8, 10: 16}  # last block at each stride
_STEM_CHANNELS = 32
_CONTEXT_CHANNELS = 96
_DECODER_CHANNELS = {16: 80, 8: 64, 4: 40, 2: 24, 1: 16}  # per output stride
_BN_EPSILON = 1e-3  # as in EfficientNet


def _bn_relu(x, activation: str, name: str | None = None):
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=0.9, name=name)(x)
    return layers.Activation(activation)(x)


def _mbconv(x, index: int, in_channels: int) -> keras.KerasTensor:
    expansion, kernel, stride, out_channels = _BLOCKS[index]
    name = f"block{index}"
    y = x
    if expansion != 1:
        y = layers.Conv2D(in_channels * expansion, 1, use_bias=False, name=f"{name}_expand")(y)
        y = _bn_relu(y, "relu6", f"{name}_expand_bn")
    y = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = _bn_relu(y, "relu6", f"{name}_dw_bn")
    y = layers.Conv2D(out_channels, 1, use_bias=False, name=f"{name}_project")(y)
    y = layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=0.9, name=f"{name}_project_bn")(y)
    if stride == 1 and in_channels == out_channels:
        y = layers.Add()([x, y])
    return y


def _separable(x, channels: int):
    x = layers.SeparableConv2D(channels, 3, padding="same", use_bias=False)(x)
    return _bn_relu(x, "relu")


def build_effnet_unet(
    height: int,
    width: int,
    pretrained_weights: bool = True,
    stride: int = 16,
    full_resolution: bool = True,
) -> keras.Model:
    """Takes RGB in [0, 1]; returns the person probability, shape (H, W, 1)."""
    if stride not in EFFNET_LAST_BLOCK:
        raise ValueError(f"encoder stride must be one of {sorted(EFFNET_LAST_BLOCK)}, not {stride}")
    if height % stride or width % stride:
        raise ValueError(f"input {height}x{width} must be divisible by {stride}")
    inputs = keras.Input((height, width, 3), name="pixels")
    # The weights come from TensorFlow's Lite0, trained on (pixel - 127) / 128;
    # tests/test_pretrained_encoder.py checks this against the BatchNorm statistics.
    x = layers.Rescaling(255.0 / 128.0, offset=-127.0 / 128.0)(inputs)
    x = layers.Conv2D(_STEM_CHANNELS, 3, 2, padding="same", use_bias=False, name="stem")(x)
    x = _bn_relu(x, "relu6", "stem_bn")
    channels, skips = _STEM_CHANNELS, {1: inputs}
    for index in range(EFFNET_LAST_BLOCK[stride] + 1):
        x = _mbconv(x, index, channels)
        channels = _BLOCKS[index][3]
        if index in _SKIP_BLOCKS and _SKIP_BLOCKS[index] < stride:
            skips[_SKIP_BLOCKS[index]] = x

    # LR-ASPP: features gated by their global average, so the whole person informs each pixel.
    features = _bn_relu(layers.Conv2D(_CONTEXT_CHANNELS, 1, use_bias=False)(x), "relu")
    gate = layers.GlobalAveragePooling2D(keepdims=True)(x)
    gate = layers.Conv2D(_CONTEXT_CHANNELS, 1, activation="sigmoid")(gate)
    x = layers.Multiply()([features, gate])

    level = stride
    while level > (1 if full_resolution else 2):
        level //= 2
        x = layers.UpSampling2D(interpolation="bilinear")(x)
        x = _separable(layers.Concatenate()([x, skips[level]]), _DECODER_CHANNELS[level])
    x = layers.Conv2D(1, 1, name="person_logits")(x)
    if not full_resolution:
        x = layers.UpSampling2D(interpolation="bilinear")(x)
    outputs = layers.Activation("sigmoid", dtype="float32", name="person")(x)
    model = keras.Model(inputs, outputs, name=f"unet_efficientnet_lite0_stride{stride}")
    if pretrained_weights:
        load_imagenet_weights(model)
    return model


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 1, 0)  # PyTorch (out, in, kh, kw) -> Keras (kh, kw, in, out)


def _depthwise_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 0, 1)  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)


def load_imagenet_weights(model: keras.Model) -> None:
    """Sets the encoder's layers from the package's state dict (PyTorch names)."""
    state = pretrained.read_legacy_state_dict(pretrained.efficientnet_lite0_file())

    def batch_norm(prefix: str) -> list[np.ndarray]:
        return [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]

    pairs = {"stem": [_conv_kernel(state["_conv_stem.weight"])], "stem_bn": batch_norm("_bn0")}
    for index, (expansion, *_) in enumerate(_BLOCKS):
        torch_name, name = f"_blocks.{index}", f"block{index}"
        if not any(layer.name == f"{name}_dw" for layer in model.layers):
            break
        if expansion != 1:
            pairs[f"{name}_expand"] = [_conv_kernel(state[f"{torch_name}._expand_conv.weight"])]
            pairs[f"{name}_expand_bn"] = batch_norm(f"{torch_name}._bn0")
        pairs[f"{name}_dw"] = [_depthwise_kernel(state[f"{torch_name}._depthwise_conv.weight"])]
        pairs[f"{name}_dw_bn"] = batch_norm(f"{torch_name}._bn1")
        pairs[f"{name}_project"] = [_conv_kernel(state[f"{torch_name}._project_conv.weight"])]
        pairs[f"{name}_project_bn"] = batch_norm(f"{torch_name}._bn2")
    for layer_name, weights in pairs.items():
        model.get_layer(layer_name).set_weights(weights)
