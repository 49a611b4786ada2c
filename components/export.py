"""Exports a trained UNet as a SavedModel with the signatures clients rely on.

``serving_default`` takes encoded photos of any size, so a client needs no
TensorFlow: it sends JPEG/PNG bytes and gets back a uint8 mask at the model's
resolution with the photo's original height and width.  BatchNorms are folded
into the convolutions first (components/batchnorm_folding.py).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from components import preprocessing as pp
from components.batchnorm_folding import fold_batch_norms
from serving import defaults


def _mask_from_bytes(model: keras.Model, images: tf.Tensor) -> dict[str, tf.Tensor]:
    height, width = model.input_shape[1], model.input_shape[2]

    def decode(image_bytes):
        image = pp.decode_rgb(image_bytes)
        size = tf.shape(image)[:2]
        return pp.resize_image(image, height, width), size[0], size[1]

    pixels, heights, widths = tf.map_fn(
        decode,
        images,
        fn_output_signature=(
            tf.TensorSpec([height, width, 3], tf.float32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32),
        ),
    )
    probabilities = model(pixels, training=False)[..., 0]
    mask = tf.cast(tf.round(tf.clip_by_value(probabilities, 0.0, 1.0) * 255.0), tf.uint8)
    return {
        defaults.OUTPUT_MASK: mask,
        defaults.OUTPUT_HEIGHT: heights,
        defaults.OUTPUT_WIDTH: widths,
    }


def export_saved_model(model: keras.Model, export_dir: str) -> None:
    model = fold_batch_norms(model)
    height, width = model.input_shape[1], model.input_shape[2]
    archive = keras.export.ExportArchive()
    archive.track(model)

    archive.add_endpoint(
        name=defaults.SIGNATURE_BYTES,
        fn=lambda images: _mask_from_bytes(model, images),
        input_signature=[tf.TensorSpec([None], tf.string, name=defaults.INPUT_IMAGES)],
    )
    archive.add_endpoint(
        name=defaults.SIGNATURE_FLOAT,
        fn=lambda pixels: {"probabilities": model(pixels, training=False)},
        input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name="pixels")],
    )

    def from_examples(examples):
        parsed = tf.io.parse_example(examples, {pp.IMAGE_KEY: pp.FEATURE_SPEC[pp.IMAGE_KEY]})
        pixels = tf.map_fn(
            lambda b: pp.resize_image(pp.decode_rgb(b), height, width),
            parsed[pp.IMAGE_KEY],
            fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32),
        )
        return {"probabilities": model(pixels, training=False)}

    archive.add_endpoint(
        name=defaults.SIGNATURE_EXAMPLES,
        fn=from_examples,
        input_signature=[tf.TensorSpec([None], tf.string, name="examples")],
    )
    # The archive lists each weight twice: as the Keras variable, and as the
    # tf.Variable the endpoints capture, and SavedModel stores both.  Serving
    # needs only the captured ones, so the lists go: the files halve.
    for name in ("variables", "trainable_variables", "non_trainable_variables"):
        setattr(archive._tf_trackable, name, [])
    archive.write_out(export_dir, verbose=False)
