"""Image decoding shared by training and serving, so both see the same pixels."""

from __future__ import annotations

import math

import tensorflow as tf

IMAGE_KEY = "image"
MASK_KEY = "mask"
HEIGHT_KEY = "height"
WIDTH_KEY = "width"
ID_KEY = "id"

FEATURE_SPEC = {
    IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
    MASK_KEY: tf.io.FixedLenFeature([], tf.string),
    HEIGHT_KEY: tf.io.FixedLenFeature([], tf.int64),
    WIDTH_KEY: tf.io.FixedLenFeature([], tf.int64),
    ID_KEY: tf.io.FixedLenFeature([], tf.string),
}


def decode_rgb(image_bytes: tf.Tensor) -> tf.Tensor:
    """JPEG, PNG (8 or 16 bit, gray, palette, alpha), GIF or BMP to float RGB in [0, 1]."""
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.float32, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_mask(mask_bytes: tf.Tensor) -> tf.Tensor:
    """A stored mask (0/255 PNG) to float {0, 1}, shape (H, W, 1)."""
    mask = tf.io.decode_png(mask_bytes, channels=1)
    return tf.cast(mask > 127, tf.float32)


def resize_image(image: tf.Tensor, height: int, width: int) -> tf.Tensor:
    return tf.image.resize(image, [height, width], method="bilinear", antialias=True)


def runs_turned(image_height, image_width, height: int, width: int) -> tf.Tensor:
    """Whether a photo goes through the model at its transposed input size (192x256 for
    a 256x192 model) instead of being squeezed into it: when the photo's shape is closer
    to that than to a square.  Nearly square photos stay: the model is trained upright
    and a square photo is distorted as much either way.  The photo is never rotated.
    """
    if height == width:
        return tf.constant(False)
    aspect = tf.cast(image_width, tf.float32) / tf.cast(image_height, tf.float32)
    # Geometric midpoint between a square (1) and the transposed input's aspect.
    midpoint = math.sqrt(height / width)
    return aspect > midpoint if height > width else aspect < midpoint


def resize_mask(mask: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Area-averaged, so the training target is a soft mask at the model's size."""
    return tf.image.resize(mask, [height, width], method="area")


def upsample_mask(mask: tf.Tensor, height, width) -> tf.Tensor:
    """A served uint8 mask (h, w) as a soft [0, 1] mask (H, W) at the photo's
    size: how the IoU gate and the benchmarks score a model at full resolution."""
    soft = tf.cast(mask, tf.float32)[..., None] / 255.0
    return tf.image.resize(soft, [height, width], method="bilinear")[..., 0]
