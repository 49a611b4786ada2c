"""Loss and metric for a mask where background dominates.

Plain binary cross-entropy is minimised by predicting "background" everywhere
when people cover a small part of the frame, so foreground pixels are weighted
up and a soft Dice term, which ignores the true negatives, is added.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

_EPS = 1e-6


def foreground_weight_from_fraction(fraction: float, cap: float = 20.0) -> float:
    """Balances the classes: weight = background / foreground, at least 1."""
    fraction = min(max(fraction, _EPS), 1.0 - _EPS)
    return float(min(max((1.0 - fraction) / fraction, 1.0), cap))


def weighted_bce(y_true, y_pred, foreground_weight: float):
    y_pred = tf.clip_by_value(y_pred, _EPS, 1.0 - _EPS)
    per_pixel = -(
        foreground_weight * y_true * tf.math.log(y_pred)
        + (1.0 - y_true) * tf.math.log(1.0 - y_pred)
    )
    return tf.reduce_mean(per_pixel, axis=[1, 2, 3])


def soft_dice_loss(y_true, y_pred):
    intersection = tf.reduce_sum(y_true * y_pred, axis=[1, 2, 3])
    total = tf.reduce_sum(y_true + y_pred, axis=[1, 2, 3])
    return 1.0 - (2.0 * intersection + 1.0) / (total + 1.0)


def lovasz_loss(y_true, y_pred):
    """Per image, the Lovász extension of 1 - IoU on the pixel errors |truth - p|: the
    binary Lovász-Softmax of Berman et al. (2018) on probabilities, person class only.
    It is convex in the errors and equals 1 - IoU when masks and truth are hard, so
    training aims at the per-image IoU the targets are stated in."""
    batch = tf.shape(y_pred)[0]
    truth = tf.reshape(y_true, [batch, -1])
    errors = tf.abs(truth - tf.reshape(y_pred, [batch, -1]))
    order = tf.argsort(errors, axis=1, direction="DESCENDING")
    errors = tf.gather(errors, order, batch_dims=1)
    truth = tf.gather(truth, order, batch_dims=1)
    # 1 - IoU of the masks that get the i largest errors wrong, and its increments.
    people = tf.reduce_sum(truth, axis=1, keepdims=True)
    jaccard = 1.0 - (people - tf.cumsum(truth, axis=1)) / (people + tf.cumsum(1.0 - truth, axis=1))
    steps = tf.concat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=1)
    return tf.reduce_sum(errors * steps, axis=1)


def make_loss(foreground_weight: float, dice_weight: float, lovasz_weight: float = 0.0):
    def loss(y_true, y_pred):
        y_true = tf.cast(y_true, y_pred.dtype)
        total = weighted_bce(y_true, y_pred, foreground_weight)
        total += dice_weight * soft_dice_loss(y_true, y_pred)
        if lovasz_weight:
            total += lovasz_weight * lovasz_loss(y_true, y_pred)
        return total

    loss.__name__ = "weighted_bce_dice_lovasz" if lovasz_weight else "weighted_bce_dice"
    return loss


@keras.saving.register_keras_serializable(package="bgremover")
class ForegroundIoU(keras.metrics.Metric):
    """Dataset-level IoU of the person class: sum of intersections / sum of unions.

    Given several ``thresholds`` it is the best of them, so that a model whose served
    threshold is chosen after training (components/calibration.py) is judged where it
    will cut, not at a 0.5 that calibration moves anyway.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        name: str = "foreground_iou",
        thresholds: tuple[float, ...] | list[float] = (),
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.threshold = threshold
        self.thresholds = tuple(thresholds) or (threshold,)
        count = (len(self.thresholds),)
        self.intersection = self.add_weight(name="intersection", shape=count, initializer="zeros")
        self.union = self.add_weight(name="union", shape=count, initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth = tf.reshape(tf.cast(y_true > 0.5, tf.float32), [1, -1])
        cuts = tf.constant(self.thresholds, y_pred.dtype)[:, None]
        pred = tf.cast(tf.reshape(y_pred, [1, -1]) > cuts, tf.float32)
        self.intersection.assign_add(tf.reduce_sum(truth * pred, axis=1))
        self.union.assign_add(tf.reduce_sum(tf.maximum(truth, pred), axis=1))

    def result(self):
        return tf.reduce_max(tf.math.divide_no_nan(self.intersection, self.union))

    def reset_state(self):
        self.intersection.assign(tf.zeros_like(self.intersection))
        self.union.assign(tf.zeros_like(self.union))

    def get_config(self):
        return {
            **super().get_config(),
            "threshold": self.threshold,
            "thresholds": list(self.thresholds),
        }


def iou_counts(truth: np.ndarray, pred: np.ndarray) -> tuple[int, int]:
    """Intersection and union pixel counts of two boolean masks."""
    truth, pred = truth.astype(bool), pred.astype(bool)
    return int(np.logical_and(truth, pred).sum()), int(np.logical_or(truth, pred).sum())


def iou(truth: np.ndarray, pred: np.ndarray) -> float:
    """Per-image IoU; two empty masks agree perfectly."""
    inter, union = iou_counts(truth, pred)
    return 1.0 if union == 0 else inter / union
