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


def make_loss(foreground_weight: float, dice_weight: float):
    def loss(y_true, y_pred):
        y_true = tf.cast(y_true, y_pred.dtype)
        return weighted_bce(y_true, y_pred, foreground_weight) + dice_weight * soft_dice_loss(
            y_true, y_pred
        )

    loss.__name__ = "weighted_bce_dice"
    return loss


@keras.saving.register_keras_serializable(package="bgremover")
class ForegroundIoU(keras.metrics.Metric):
    """Dataset-level IoU of the person class: sum of intersections / sum of unions."""

    def __init__(self, threshold: float = 0.5, name: str = "foreground_iou", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = threshold
        self.intersection = self.add_weight(name="intersection", initializer="zeros")
        self.union = self.add_weight(name="union", initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth = tf.cast(y_true > 0.5, tf.float32)
        pred = tf.cast(y_pred > self.threshold, tf.float32)
        self.intersection.assign_add(tf.reduce_sum(truth * pred))
        self.union.assign_add(tf.reduce_sum(tf.maximum(truth, pred)))

    def result(self):
        return tf.math.divide_no_nan(self.intersection, self.union)

    def reset_state(self):
        self.intersection.assign(0.0)
        self.union.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


def iou_counts(truth: np.ndarray, pred: np.ndarray) -> tuple[int, int]:
    """Intersection and union pixel counts of two boolean masks."""
    truth, pred = truth.astype(bool), pred.astype(bool)
    return int(np.logical_and(truth, pred).sum()), int(np.logical_or(truth, pred).sum())


def iou(truth: np.ndarray, pred: np.ndarray) -> float:
    """Per-image IoU; two empty masks agree perfectly."""
    inter, union = iou_counts(truth, pred)
    return 1.0 if union == 0 else inter / union
