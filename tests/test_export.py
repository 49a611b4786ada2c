"""The exported SavedModel holds each (folded) weight once and answers as the Keras model does."""

import numpy as np
import tensorflow as tf

from components.batchnorm_folding import fold_batch_norms
from components.export import export_saved_model
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
    model = build_unet(32, 32, filters=4, depth=2)
    export_saved_model(model, str(tmp_path))
    pixels = np.random.default_rng(1).random((1, 32, 32, 3), dtype=np.float32)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(tmp_path))
        signature = meta_graph.signature_def[defaults.SIGNATURE_FLOAT]
        served = session.run(
            signature.outputs["probabilities"].name,
            {signature.inputs["pixels"].name: pixels},
        )
    np.testing.assert_allclose(served, model(pixels).numpy(), atol=1e-6)
