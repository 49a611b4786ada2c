"""The exported SavedModel holds each (folded) weight once and answers as the Keras model does."""

import keras
import numpy as np
import tensorflow as tf

from components import preprocessing as pp
from components.batchnorm_folding import fold_batch_norms
from components.export import export_saved_model
from components.export import main as export_main
from components.unet import build_unet
from serving import defaults


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
    landscape = _png(np.zeros((20, 50, 3), np.uint8))
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
    assert mask.shape == (1, 32, 16) and mask.dtype == np.uint8


def _png(pixels: np.ndarray) -> bytes:
    return tf.io.encode_png(tf.constant(pixels)).numpy()


def test_landscape_photos_run_turned_not_squeezed(tmp_path):
    """In one batch, a portrait or nearly square photo takes the model as trained and a
    landscape one the same weights at the turned size, its mask resized back to the
    model's shape."""
    keras.utils.set_random_seed(0)  # untrained masks that tell the two paths apart
    model = build_unet(32, 16, filters=4, depth=2)
    export_saved_model(model, str(tmp_path))
    rng = np.random.default_rng(2)
    photos = {
        "landscape": rng.integers(0, 256, (40, 90, 3), dtype=np.uint8),
        "portrait": rng.integers(0, 256, (60, 30, 3), dtype=np.uint8),
        # Wider than tall, but closer to a square than to the turned 16x32 input.
        "squarish": rng.integers(0, 256, (50, 60, 3), dtype=np.uint8),
    }
    sideways = build_unet(16, 32, filters=4, depth=2)
    sideways.set_weights(model.get_weights())

    def resized(name, height, width):
        return pp.resize_image(tf.constant(photos[name] / 255.0, tf.float32), height, width)[None]

    expected = {
        "portrait": model(resized("portrait", 32, 16))[0, ..., 0],
        "squarish": model(resized("squarish", 32, 16))[0, ..., 0],
        "landscape": tf.image.resize(sideways(resized("landscape", 16, 32)), [32, 16])[0, ..., 0],
    }
    squeezed = model(resized("landscape", 32, 16))[0, ..., 0]
    assert np.abs(squeezed - expected["landscape"]).max() > 3 / 255

    loaded = tf.saved_model.load(str(tmp_path))
    order = ["landscape", "portrait", "squarish", "landscape"]
    images = tf.constant([_png(photos[name]) for name in order])
    served = loaded.signatures[defaults.SIGNATURE_BYTES](**{defaults.INPUT_IMAGES: images})
    masks = served[defaults.OUTPUT_MASK].numpy()
    assert masks.shape == (4, 32, 16)
    assert served[defaults.OUTPUT_WIDTH].numpy().tolist() == [90, 30, 60, 90]
    for name, mask in zip(order, masks, strict=True):
        np.testing.assert_allclose(mask / 255.0, expected[name], atol=1 / 255 + 1e-6)


def test_a_trained_keras_model_can_be_exported_again(tmp_path):
    model = build_unet(32, 16, filters=4, depth=2)
    model.save(tmp_path / "model.keras")
    export_main([str(tmp_path / "model.keras"), str(tmp_path / "export")])
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    pixels = np.random.default_rng(3).random((1, 32, 16, 3), dtype=np.float32)
    served = loaded.signatures[defaults.SIGNATURE_FLOAT](pixels=tf.constant(pixels))
    np.testing.assert_allclose(served["probabilities"].numpy(), model(pixels).numpy(), atol=1e-6)
