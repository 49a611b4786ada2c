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


def header_pixels(image_bytes: tf.Tensor) -> tf.Tensor:
    """Width x height as a photo's header states it (JPEG, PNG, GIF, BMP, WebP; else 0), read
    before decoding, so that a small file claiming a huge size is refused before it
    takes gigabytes of memory (a decompression bomb)."""
    # The first 30 bytes, zero-padded: a shorter file must reach the decoder's own
    # error, not fail here on reading past its end.
    head_bytes = tf.strings.substr(image_bytes, 0, 30)  # never past the end from 0
    head_bytes = tf.strings.substr(tf.strings.join([head_bytes, b"\0" * 30]), 0, 30)
    head = tf.cast(tf.io.decode_raw(head_bytes, tf.uint8), tf.int64)

    def big_endian(start: int, length: int) -> tf.Tensor:
        return tf.reduce_sum(
            head[start : start + length] * 256 ** tf.range(length - 1, -1, -1, tf.int64)
        )

    def little_endian(start: int, length: int) -> tf.Tensor:
        return tf.reduce_sum(head[start : start + length] * 256 ** tf.range(length, dtype=tf.int64))

    def jpeg() -> tf.Tensor:
        shape = tf.cast(tf.image.extract_jpeg_shape(image_bytes), tf.int64)
        return shape[0] * shape[1]

    def bmp() -> tf.Tensor:
        height = little_endian(22, 4)
        height = tf.where(height >= 2**31, 2**32 - height, height)  # top-down rows: negative
        return little_endian(18, 4) * height

    def webp() -> tf.Tensor:  # the three chunk kinds of the WebP container
        chunk = tf.strings.substr(head_bytes, 12, 4)
        lossless = little_endian(21, 4)  # 14 bits each, minus one
        return tf.case(
            [
                (
                    chunk == b"VP8X",
                    lambda: (little_endian(24, 3) + 1) * (little_endian(27, 3) + 1),
                ),
                (
                    chunk == b"VP8L",
                    lambda: (lossless % 2**14 + 1) * (lossless // 2**14 % 2**14 + 1),
                ),
            ],
            default=lambda: little_endian(26, 2) % 2**14 * (little_endian(28, 2) % 2**14),
        )

    magic = tf.strings.substr(head_bytes, 0, 4)
    return tf.case(
        [
            (tf.strings.substr(magic, 0, 3) == b"\xff\xd8\xff", jpeg),
            (magic == b"\x89PNG", lambda: big_endian(16, 4) * big_endian(20, 4)),
            (magic == b"GIF8", lambda: little_endian(6, 2) * little_endian(8, 2)),
            (tf.strings.substr(magic, 0, 2) == b"BM", bmp),
            (tf.strings.substr(head_bytes, 8, 4) == b"WEBP", webp),
        ],
        default=lambda: tf.constant(0, tf.int64),
    )


def decode_rgb(image_bytes: tf.Tensor) -> tf.Tensor:
    """JPEG, PNG (8 or 16 bit, gray, palette, alpha), GIF, BMP or WebP to float RGB in [0, 1].

    Decoded as 8 bits, then scaled: decoding to float at once refuses WebP and aborts
    the whole process (std::bad_alloc in TF 2.21) on a BMP stored top row first.
    """
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image = tf.image.convert_image_dtype(image, tf.float32)
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
