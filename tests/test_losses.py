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


def test_lovasz_loss_is_one_minus_iou_on_hard_masks_and_pulls_the_right_way():
    rng = np.random.default_rng(3)
    truth = (rng.random((3, 16, 16, 1)) > 0.6).astype(np.float32)
    hard = (rng.random((3, 16, 16, 1)) > 0.5).astype(np.float32)
    hard[2] = truth[2]  # one perfect mask
    got = losses.lovasz_loss(tf.constant(truth), tf.constant(hard)).numpy()
    want = [1.0 - losses.iou(t > 0.5, h > 0.5) for t, h in zip(truth, hard, strict=True)]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[2] == 0.0

    soft = rng.uniform(0.0, 1.0, truth.shape).astype(np.float32)
    got = losses.lovasz_loss(tf.constant(truth), tf.constant(soft)).numpy()
    want = [_numpy_lovasz(t, p) for t, p in zip(truth, soft, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    plain = losses.make_loss(1.0, 0.0)(tf.constant(truth), tf.constant(soft))
    with_lovasz = losses.make_loss(1.0, 0.0, 1.0)(tf.constant(truth), tf.constant(soft))
    np.testing.assert_allclose(with_lovasz - plain, got, atol=1e-5)


def _numpy_lovasz(truth: np.ndarray, probabilities: np.ndarray) -> float:
    """Berman et al.'s reference (lovasz_softmax_flat for one class, lovasz_grad)."""
    truth, probabilities = truth.ravel(), probabilities.ravel()
    errors = np.abs(truth - probabilities)
    order = np.argsort(-errors, kind="stable")
    gt_sorted = truth[order]
    gts = gt_sorted.sum()
    intersection = gts - np.cumsum(gt_sorted)
    union = gts + np.cumsum(1 - gt_sorted)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return float(np.dot(errors[order], jaccard))


def test_foreground_iou_over_several_thresholds_is_the_best_of_them():
    truth = np.zeros((1, 4, 4, 1), np.float32)
    truth[0, :2] = 1.0
    pred = np.full((1, 4, 4, 1), 0.1, np.float32)
    pred[0, :2] = 0.6  # the person
    pred[0, 2] = 0.55  # a row more than the person, above 0.5 only
    at_half = losses.ForegroundIoU(0.5)
    at_half.update_state(truth, pred)
    assert float(at_half.result()) == pytest.approx(8 / 12)
    best = losses.ForegroundIoU(thresholds=(0.3, 0.5, 0.58, 0.7))
    best.update_state(truth, pred)
    assert float(best.result()) == pytest.approx(1.0)  # at 0.58
    best.reset_state()
    best.update_state(truth, np.zeros_like(pred))
    assert float(best.result()) == 0.0
