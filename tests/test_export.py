"""The exported SavedModel holds each (folded) weight once and answers as the Keras model does."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from components import preprocessing as pp
from components.batchnorm_folding import fold_batch_norms
from components.export import export_saved_model
from components.export import main as export_main
from components.unet import build_unet
from serving import defaults
from tests.serving_fixtures import png_bytes


def test_saved_model_stores_each_weight_once_and_matches_keras(tmp_path):
    model = build_unet(32, 32, filters=4, depth=2)
    export_saved_model(model, str(tmp_path))

    reader = tf.train.load_checkpoint(str(tmp_path / "variables" / "variables"))
    stored = sum(
        int(np.prod(shape))
        for name, shape in reader.get_variable_to_shape_map().items()
        if name.endswith("VARIABLE_VALUE")
    )
    # Keras's archive would store them twice, and unfolded.
    assert stored == fold_batch_norms(model).count_params() < model.count_params()

    loaded = tf.saved_model.load(str(tmp_path))
    pixels = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    served = loaded.signatures[defaults.SIGNATURE_FLOAT](pixels=tf.constant(pixels))
    np.testing.assert_allclose(served["probabilities"].numpy(), model(pixels).numpy(), atol=1e-6)


def test_saved_model_loads_the_way_tf_serving_loads_it(tmp_path):
    """TF Serving restores variables through the MetaGraph's saver, not the Python
    object graph; TF1's loader takes that same path."""
    model = build_unet(32, 16, filters=4, depth=2)
    export_saved_model(model, str(tmp_path))
    pixels = np.random.default_rng(1).random((1, 32, 16, 3), dtype=np.float32)
    landscape = png_bytes(np.zeros((20, 50, 3), np.uint8))
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(tmp_path))
        signature = meta_graph.signature_def[defaults.SIGNATURE_FLOAT]
        served = session.run(
            signature.outputs["probabilities"].name,
            {signature.inputs["pixels"].name: pixels},
        )
        # serving_default's control flow (a landscape photo, turned) runs the same way.
        by_bytes = meta_graph.signature_def[defaults.SIGNATURE_BYTES]
        mask = session.run(
            by_bytes.outputs[defaults.OUTPUT_MASK].name,
            {by_bytes.inputs[defaults.INPUT_IMAGES].name: [landscape]},
        )
    np.testing.assert_allclose(served, model(pixels).numpy(), atol=1e-6)
    by_bytes = tf.saved_model.load(str(tmp_path)).signatures[defaults.SIGNATURE_BYTES]
    expected = by_bytes(**{defaults.INPUT_IMAGES: tf.constant([landscape])})
    np.testing.assert_array_equal(mask, expected[defaults.OUTPUT_MASK].numpy())


@pytest.mark.parametrize("size", [(32, 16), (16, 32)], ids=["portrait-model", "landscape-model"])
def test_photos_of_the_other_orientation_run_transposed_not_squeezed(tmp_path, size):
    """In one batch, a photo of the model's orientation or a nearly square one takes the
    model as trained, one of the other orientation the same weights at the transposed
    size, its mask resized back to the model's shape; in serving_default and
    predict_examples alike."""
    keras.utils.set_random_seed(0)  # untrained masks that tell the two paths apart
    height, width = size
    model = build_unet(height, width, filters=4, depth=2)
    export_saved_model(model, str(tmp_path))
    transposed = build_unet(width, height, filters=4, depth=2)
    transposed.set_weights(model.get_weights())
    rng = np.random.default_rng(2)
    # "squarish" is wider than tall, but closer to a square than to either input.
    shapes = {"wide": (40, 90), "tall": (90, 40), "squarish": (50, 60)}
    photos = {
        name: rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for name, shape in shapes.items()
    }
    other = "wide" if height > width else "tall"

    def mask(name, network, network_height, network_width):
        photo = tf.constant(photos[name] / 255.0, tf.float32)
        pixels = pp.resize_image(photo, network_height, network_width)[None]
        return tf.image.resize(network(pixels), [height, width])[0, ..., 0].numpy()

    expected = {name: mask(name, model, height, width) for name in photos}
    squeezed = expected[other]
    expected[other] = mask(other, transposed, width, height)
    assert np.abs(squeezed - expected[other]).max() > 3 / 255  # the test can tell them apart

    loaded = tf.saved_model.load(str(tmp_path))
    order = ["wide", "tall", "squarish", "wide"]
    images = tf.constant([png_bytes(photos[name]) for name in order])
    served = loaded.signatures[defaults.SIGNATURE_BYTES](**{defaults.INPUT_IMAGES: images})
    masks = served[defaults.OUTPUT_MASK].numpy()
    assert masks.shape == (4, height, width)
    assert served[defaults.OUTPUT_WIDTH].numpy().tolist() == [90, 40, 60, 90]
    for name, served_mask in zip(order, masks, strict=True):
        np.testing.assert_allclose(served_mask / 255.0, expected[name], atol=1 / 255 + 1e-6)

    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[png_bytes(photos[other])]))
    example = tf.train.Example(features=tf.train.Features(feature={pp.IMAGE_KEY: feature}))
    by_example = loaded.signatures[defaults.SIGNATURE_EXAMPLES](
        examples=tf.constant([example.SerializeToString()])
    )["probabilities"]
    np.testing.assert_allclose(by_example[0, ..., 0], expected[other], atol=1e-5)

    empty = loaded.signatures[defaults.SIGNATURE_BYTES](
        **{defaults.INPUT_IMAGES: tf.zeros([0], tf.string)}
    )
    assert empty[defaults.OUTPUT_MASK].shape == (0, height, width)


def test_a_trained_keras_model_can_be_exported_again(tmp_path):
    model = build_unet(32, 16, filters=4, depth=2)
    model.save(tmp_path / "model.keras")
    export_main([str(tmp_path / "model.keras"), str(tmp_path / "export")])
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    pixels = np.random.default_rng(3).random((1, 32, 16, 3), dtype=np.float32)
    served = loaded.signatures[defaults.SIGNATURE_FLOAT](pixels=tf.constant(pixels))
    np.testing.assert_allclose(served["probabilities"].numpy(), model(pixels).numpy(), atol=1e-6)


def _encoded(pixels: np.ndarray, fmt: str, **options) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def _top_row_first_bmp(pixels: np.ndarray) -> bytes:
    """A BMP with a negative height: rows stored from the top, as many tools write them."""
    import struct

    bottom_up = bytearray(_encoded(pixels[::-1], "BMP"))  # Pillow stores the bottom row first
    height = struct.unpack_from("<i", bottom_up, 22)[0]
    struct.pack_into("<i", bottom_up, 22, -height)
    return bytes(bottom_up)


def test_every_lossless_encoding_of_a_photo_gets_the_same_mask(tmp_path):
    """Decoding to float at once refused WebP, and a top-down BMP killed the whole
    server process (std::bad_alloc), TF Serving's as much as ours."""
    export_saved_model(build_unet(32, 32, filters=4, depth=2), str(tmp_path))
    serve = tf.saved_model.load(str(tmp_path)).signatures[defaults.SIGNATURE_BYTES]
    pixels = np.random.default_rng(2).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    photos = {
        "png": png_bytes(pixels),
        "webp": _encoded(pixels, "WEBP", lossless=True),
        "bmp": _encoded(pixels, "BMP"),
        "top-down bmp": _top_row_first_bmp(pixels),
    }
    masks = serve(**{defaults.INPUT_IMAGES: tf.constant(list(photos.values()))})
    masks = masks[defaults.OUTPUT_MASK].numpy()
    for name, mask in zip(photos, masks, strict=True):
        np.testing.assert_array_equal(mask, masks[0], err_msg=name)


@pytest.mark.parametrize("data", [b"", b"\x89PN", b"RIFF\0\0\0\0WEB"], ids=["empty", "3", "11"])
def test_a_file_shorter_than_its_header_gets_the_decoders_error(tmp_path, data):
    export_saved_model(build_unet(32, 32, filters=4, depth=2), str(tmp_path))
    serve = tf.saved_model.load(str(tmp_path)).signatures[defaults.SIGNATURE_BYTES]
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file|Input is empty"):
        serve(**{defaults.INPUT_IMAGES: tf.constant([data])})
