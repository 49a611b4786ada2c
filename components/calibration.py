"""Moves the exported mask's midpoint to the threshold that scores best.

The foreground-weighted loss (components/losses.py) pays more for a missed person
pixel than for a false one, so the trained model says "person" too early: with
weight w, BCE alone reaches 0.5 where a pixel is only 1/(w+1) likely to be one
(the Dice term moves it again).  The Trainer therefore picks the
threshold with the best mean per-image IoU on its validation slice, and the export
remaps the probabilities so that this threshold lands on 0.5, where the IoU gate, the
client's hard cut and the soft alpha's midpoint all sit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import tensorflow as tf

# Wide enough for foreground weights of 1 to 4; a grid, since validation is ~100 photos.
CANDIDATES: tuple[float, ...] = tuple(round(t, 2) for t in np.arange(0.30, 0.801, 0.05))


def per_image_iou(truth: tf.Tensor, probabilities: tf.Tensor, threshold: float) -> tf.Tensor:
    """(N,) foreground IoU per image; 1 where neither mask has a person pixel."""
    truth = truth > 0.5
    pred = probabilities > threshold
    axes = list(range(1, len(truth.shape)))
    inter = tf.reduce_sum(tf.cast(truth & pred, tf.float32), axis=axes)
    union = tf.reduce_sum(tf.cast(truth | pred, tf.float32), axis=axes)
    return tf.where(union > 0, inter / tf.maximum(union, 1.0), 1.0)


def best_threshold(
    predict: Callable[[tf.Tensor], tf.Tensor], batches: Iterable[tuple[tf.Tensor, tf.Tensor]]
) -> tuple[float, dict[float, float]]:
    """The candidate with the highest mean per-image IoU of ``predict``'s probabilities
    over ``batches`` (ties: the one nearest 0.5), and every candidate's mean."""
    sums = np.zeros(len(CANDIDATES))
    count = 0
    for images, masks in batches:
        probabilities = predict(images)
        for index, threshold in enumerate(CANDIDATES):
            sums[index] += float(tf.reduce_sum(per_image_iou(masks, probabilities, threshold)))
        count += int(images.shape[0])
    if not count:
        raise ValueError("no validation photos to calibrate the threshold on")
    means = {t: float(total / count) for t, total in zip(CANDIDATES, sums, strict=True)}
    best = max(CANDIDATES, key=lambda t: (round(means[t], 6), -abs(t - 0.5)))
    return best, means


def recentre(probabilities: tf.Tensor, threshold: float) -> tf.Tensor:
    """Monotone remap taking ``threshold`` to 0.5 and keeping 0 and 1: the odds are
    divided by the threshold's odds."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"decision threshold must lie strictly between 0 and 1, got {threshold}")
    if threshold == 0.5:
        return probabilities
    kept = probabilities * (1.0 - threshold)
    return kept / (kept + (1.0 - probabilities) * threshold)
