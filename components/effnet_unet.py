"""A UNet whose encoder is ImageNet-pretrained EfficientNet-Lite, for CPUs.

Lite is EfficientNet-B0 made for phones: ReLU6, no squeeze-excitation, so
every layer is a plain convolution that runs fast on 2 cores.  Lite1 repeats
the middle stages' blocks more often than Lite0 (same widths), for more
accuracy at more latency.  The encoder stops at stride 16 (112 channels) or at
stride 32 (two blocks of 192 channels, for more context at 1 ms more); the
remaining blocks would double the weights and push the SavedModel past 10 MB.
The decoder is the Keras U-Net's, made light: LR-ASPP context at the encoder's
stride, then bilinear upsampling, a skip and one depthwise-separable
convolution per level, and at the end the input photo itself for sharp edges.
Stopping that last level at half resolution saves 4 of 22 ms at 256x192
(before BatchNorm folding); the client's guided filter then draws the edges
from the photo.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from components import pretrained
from components.architecture import EFFNET_STRIDES

# (expansion, kernel, stride, output channels) of each stage's blocks, and how
# many blocks each Lite variant has per stage (the last stage is never used).
_STAGES = (
    (1, 3, 1, 16),
    (6, 3, 2, 24),
    (6, 5, 2, 40),
    (6, 3, 2, 80),
    (6, 5, 1, 112),
    (6, 5, 2, 192),
    (6, 3, 1, 320),
)
_REPEATS = {"lite0": (1, 2, 2, 3, 3, 4, 1), "lite1": (1, 3, 3, 4, 4, 5, 1)}
# The stage that ends the encoder at each stride, and how many of its blocks.
_LAST_STAGE = {16: (4, None), 32: (5, 2)}
_STEM_CHANNELS = 32
_CONTEXT_CHANNELS = 96
_DECODER_CHANNELS = {16: 80, 8: 64, 4: 40, 2: 24, 1: 16}  # per output stride
_BN_EPSILON = 1e-3  # as in EfficientNet


def _bn_relu(x, activation: str, name: str | None = None):
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=0.9, name=name)(x)
    return layers.Activation(activation)(x)


def _blocks(variant: str, stride: int) -> list[tuple[tuple[int, int, int, int], int]]:
    """The encoder's blocks in order, each with the stride of its output; only a
    stage's first block strides."""
    stage_end, count = _LAST_STAGE[stride]
    blocks, output_stride = [], 2  # the stem halves the input
    for stage, ((expansion, kernel, first_stride, channels), repeats) in enumerate(
        zip(_STAGES, _REPEATS[variant], strict=True)
    ):
        if stage > stage_end:
            break
        output_stride *= first_stride
        repeats = count if stage == stage_end and count else repeats
        for index in range(repeats):
            block_stride = first_stride if index == 0 else 1
            blocks.append(((expansion, kernel, block_stride, channels), output_stride))
    return blocks


def _mbconv(x, index: int, block: tuple[int, int, int, int], in_channels: int):
    expansion, kernel, stride, out_channels = block
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
    variant: str = "lite0",
) -> keras.Model:
    """Takes RGB in [0, 1]; returns the person probability, shape (H, W, 1)."""
    if variant not in _REPEATS:
        raise ValueError(f"EfficientNet variant must be one of {sorted(_REPEATS)}, not {variant}")
    if stride not in EFFNET_STRIDES:
        raise ValueError(f"encoder stride must be one of {EFFNET_STRIDES}, not {stride}")
    if height % stride or width % stride:
        raise ValueError(f"input {height}x{width} must be divisible by {stride}")
    inputs = keras.Input((height, width, 3), name="pixels")
    # The weights come from TensorFlow's Lite models, trained on (pixel - 127) / 128;
    # tests/test_pretrained_encoder.py checks this against the BatchNorm statistics.
    x = layers.Rescaling(255.0 / 128.0, offset=-127.0 / 128.0)(inputs)
    x = layers.Conv2D(_STEM_CHANNELS, 3, 2, padding="same", use_bias=False, name="stem")(x)
    x = _bn_relu(x, "relu6", "stem_bn")
    channels, skips = _STEM_CHANNELS, {1: inputs}
    blocks = _blocks(variant, stride)
    for index, (block, output_stride) in enumerate(blocks):
        x = _mbconv(x, index, block, channels)
        channels = block[3]
        # A stage's last block at each stride below the encoder's is a skip.
        if output_stride < stride:
            skips[output_stride] = x

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
    model = keras.Model(inputs, outputs, name=f"unet_efficientnet_{variant}_stride{stride}")
    if pretrained_weights:
        load_imagenet_weights(model, variant, len(blocks))
    return model


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 1, 0)  # PyTorch (out, in, kh, kw) -> Keras (kh, kw, in, out)


def _depthwise_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 0, 1)  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)


def load_imagenet_weights(model: keras.Model, variant: str, block_count: int) -> None:
    """Sets the encoder's layers from the package's state dict (PyTorch names)."""
    state = pretrained.read_legacy_state_dict(pretrained.efficientnet_lite_file(variant))

    def batch_norm(prefix: str) -> list[np.ndarray]:
        return [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]

    pairs = {"stem": [_conv_kernel(state["_conv_stem.weight"])], "stem_bn": batch_norm("_bn0")}
    for index in range(block_count):
        torch_name, name = f"_blocks.{index}", f"block{index}"
        if f"{torch_name}._expand_conv.weight" in state:
            pairs[f"{name}_expand"] = [_conv_kernel(state[f"{torch_name}._expand_conv.weight"])]
            pairs[f"{name}_expand_bn"] = batch_norm(f"{torch_name}._bn0")
        pairs[f"{name}_dw"] = [_depthwise_kernel(state[f"{torch_name}._depthwise_conv.weight"])]
        pairs[f"{name}_dw_bn"] = batch_norm(f"{torch_name}._bn1")
        pairs[f"{name}_project"] = [_conv_kernel(state[f"{torch_name}._project_conv.weight"])]
        pairs[f"{name}_project_bn"] = batch_norm(f"{torch_name}._bn2")
    for layer_name, weights in pairs.items():
        model.get_layer(layer_name).set_weights(weights)
