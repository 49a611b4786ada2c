"""init_model: training starts from an exported SavedModel, whose BatchNorms are folded."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from components.effnet_unet import build_effnet_unet
from components.export import export_saved_model
from components.unet import build_unet
from components.unfolding import load_exported
from serving import defaults

HEIGHT, WIDTH = 48, 32


def _randomised(model):
    """Trained-looking BatchNorms: statistics and affine parameters far from the defaults."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0, 0.3, beta.shape),
                    rng.normal(0, 0.3, mean.shape),
                    rng.uniform(0.5, 2.0, variance.shape),
                ]
            )
    return model


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return np.random.default_rng(0).uniform(size=(12, HEIGHT, WIDTH, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> str:
    export_dir = str(tmp_path_factory.mktemp("exported") / "1")
    export_saved_model(_randomised(build_effnet_unet(HEIGHT, WIDTH, False)), export_dir)
    return export_dir


def test_the_unfolded_model_computes_what_the_export_serves(exported, photos):
    # Built after the exported model in one process, so its unnamed layers are
    # numbered differently (separable_conv2d_4 for separable_conv2d): matched by rank.
    model = build_effnet_unet(HEIGHT, WIDTH, False)
    built = {
        n: model.get_layer(n).get_weights()[0] for n in ("stem", "block3_dw", "block3_project")
    }
    load_exported(model, exported, tf.data.Dataset.from_tensor_slices(photos).batch(4))

    served = tf.saved_model.load(exported).signatures[defaults.SIGNATURE_FLOAT]
    expected = next(iter(served(pixels=tf.constant(photos)).values())).numpy()
    np.testing.assert_allclose(model(photos, training=False), expected, atol=1e-4)

    # Each kernel keeps its built scale per output channel, so Adam's steps are sized as
    # in training; folding alone would have shrunk or grown it by gamma / sqrt(variance).
    for name, kernel in built.items():
        loaded = model.get_layer(name).get_weights()[0]
        axes = (0, 1, 3) if name.endswith("_dw") else (0, 1, 2)
        norms = np.sqrt(np.square(loaded).sum(axes)), np.sqrt(np.square(kernel).sum(axes))
        np.testing.assert_allclose(*norms, rtol=1e-4)

    # Training-mode batches are normalised by about what the moving statistics say.
    stem = keras.Model(model.input, model.get_layer("stem").output)(photos).numpy()
    moving_mean, moving_variance = model.get_layer("stem_bn").get_weights()[2:]
    np.testing.assert_allclose(moving_mean, stem.mean((0, 1, 2)), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(moving_variance, stem.var((0, 1, 2)), rtol=1e-3, atol=1e-4)


def test_another_architecture_is_refused(exported, photos):
    with pytest.raises(ValueError, match="another architecture"):
        load_exported(
            build_unet(HEIGHT, WIDTH, 4, 2), exported, tf.data.Dataset.from_tensors(photos)
        )
    with pytest.raises(ValueError, match="another architecture"):
        load_exported(
            build_effnet_unet(HEIGHT, WIDTH, False, variant="lite1"),
            exported,
            tf.data.Dataset.from_tensors(photos),
        )


def test_a_folder_without_a_saved_model_says_so(tmp_path, photos):
    with pytest.raises(FileNotFoundError, match="not a SavedModel"):
        load_exported(
            build_effnet_unet(HEIGHT, WIDTH, False),
            str(tmp_path),
            tf.data.Dataset.from_tensors(photos),
        )
