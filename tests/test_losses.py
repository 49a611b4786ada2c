"""Loss and IoU against NumPy references; the weighted loss does not collapse."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from components import losses


def _numpy_weighted_bce(y, p, w):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.mean(-(w * y * np.log(p) + (1 - y) * np.log(1 - p)), axis=(1, 2, 3))


def _numpy_dice(y, p):
    inter = (y * p).sum(axis=(1, 2, 3))
    return 1 - (2 * inter + 1) / ((y + p).sum(axis=(1, 2, 3)) + 1)


def test_loss_matches_numpy_reference():
    rng = np.random.default_rng(0)
    y = (rng.random((3, 8, 8, 1)) > 0.7).astype(np.float32)
    p = rng.random((3, 8, 8, 1)).astype(np.float32)
    got = losses.make_loss(4.0, 0.5)(tf.constant(y), tf.constant(p)).numpy()
    want = _numpy_weighted_bce(y, p, 4.0) + 0.5 * _numpy_dice(y, p)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_iou_metric_matches_numpy_reference():
    rng = np.random.default_rng(1)
    y = (rng.random((4, 16, 16, 1)) > 0.6).astype(np.float32)
    p = rng.random((4, 16, 16, 1)).astype(np.float32)
    metric = losses.ForegroundIoU(threshold=0.5)
    metric.update_state(y[:2], p[:2])
    metric.update_state(y[2:], p[2:])
    truth, pred = y > 0.5, p > 0.5
    want = np.logical_and(truth, pred).sum() / np.logical_or(truth, pred).sum()
    assert metric.result().numpy() == pytest.approx(want, rel=1e-6)
    assert losses.iou(truth[0], pred[0]) == pytest.approx(
        np.logical_and(truth[0], pred[0]).sum() / np.logical_or(truth[0], pred[0]).sum()
    )
    assert losses.iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


@pytest.mark.parametrize(
    ("fraction", "weight"), [(0.5, 1.0), (0.1, 9.0), (0.001, 20.0), (0.9, 1.0)]
)
def test_foreground_weight_balances_classes(fraction, weight):
    assert losses.foreground_weight_from_fraction(fraction) == pytest.approx(weight)


def _imbalanced_set(n=16, size=16):
    """Small squares of person on a large background (~4% foreground); the colours
    overlap, so the best plain-BCE answer is "background" almost everywhere."""
    rng = np.random.default_rng(2)
    x = rng.random((n, size, size, 3)).astype(np.float32) * 0.7
    y = np.zeros((n, size, size, 1), np.float32)
    for i in range(n):
        r, c = rng.integers(0, size - 3, 2)
        x[i, r : r + 3, c : c + 3, 0] = rng.uniform(0.6, 1.0, (3, 3))  # redder people
        y[i, r : r + 3, c : c + 3, 0] = 1.0
    return x, y


def _train(loss, x, y):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(x.shape[1:]),
            keras.layers.Conv2D(1, 1, activation="sigmoid"),
        ]
    )
    model.compile(keras.optimizers.Adam(0.05), loss=loss)
    model.fit(x, y, epochs=40, batch_size=16, verbose=0)
    pred = model.predict(x, verbose=0) > 0.5
    return np.logical_and(pred, y > 0.5).sum() / max(np.logical_or(pred, y > 0.5).sum(), 1)


def test_weighted_loss_does_not_collapse_where_plain_bce_does():
    x, y = _imbalanced_set()
    weight = losses.foreground_weight_from_fraction(float(y.mean()))
    weighted = _train(losses.make_loss(weight, 1.0), x, y)
    plain = _train("binary_crossentropy", x, y)
    assert plain < 0.05  # plain BCE answers "background" everywhere
    assert weighted > 0.25
