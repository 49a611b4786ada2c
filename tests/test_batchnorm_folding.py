"""Folding BatchNorms into convolutions changes the latency, never the answer."""

import keras
import numpy as np
import pytest

from components.batchnorm_folding import fold_batch_norms
from components.effnet_unet import build_effnet_unet
from components.losses import make_loss
from components.unet import build_unet


def _with_trained_statistics(model: keras.Model, seed: int = 0) -> keras.Model:
    """Fresh BatchNorms are identities; trained ones scale and shift."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    gamma * rng.uniform(0.5, 1.5, gamma.shape),
                    beta + rng.normal(0.0, 0.1, beta.shape),
                    mean + rng.normal(0.0, 0.1, mean.shape),
                    variance * rng.uniform(0.5, 2.0, variance.shape),
                ]
            )
    return model


def _norms(model: keras.Model) -> int:
    return sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


@pytest.mark.parametrize(
    "build",
    [
        lambda: build_unet(32, 32, filters=4, depth=2),  # Conv2D
        lambda: build_unet(32, 32, filters=4, depth=2, separable=True),  # SeparableConv2D
        lambda: build_effnet_unet(64, 32, False, stride=32, full_resolution=False),  # Depthwise
    ],
    ids=["plain", "separable", "effnet"],
)
def test_folded_model_answers_as_the_original(build):
    model = _with_trained_statistics(build())
    model.compile(loss=make_loss(3.0, 1.0))  # as the trainer hands it over, custom loss and all
    pixels = np.random.default_rng(1).random((2, *model.input_shape[1:]), dtype=np.float32)
    before = model(pixels, training=False).numpy()

    folded = fold_batch_norms(model)

    assert _norms(folded) == 0 and _norms(model) > 0  # the original keeps its BatchNorms
    assert folded.count_params() < model.count_params()
    np.testing.assert_allclose(folded(pixels, training=False).numpy(), before, atol=2e-6)
    np.testing.assert_array_equal(model(pixels, training=False).numpy(), before)


def test_convolutions_that_cannot_be_folded_are_left_alone():
    inputs = keras.Input((8, 8, 3))
    shared = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    activated = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Add()(
        [
            shared,  # feeds more than its BatchNorm
            keras.layers.BatchNormalization()(shared),
            keras.layers.BatchNormalization()(activated),  # normalizes after the ReLU
        ]
    )
    model = _with_trained_statistics(keras.Model(inputs, outputs))
    pixels = np.random.default_rng(2).random((1, 8, 8, 3), dtype=np.float32)

    folded = fold_batch_norms(model)

    assert _norms(folded) == 2
    np.testing.assert_allclose(folded(pixels).numpy(), model(pixels).numpy(), atol=1e-6)
