"""Augmentation keeps image and mask aligned and does what each transform claims."""

import numpy as np
import pytest
import tensorflow as tf

from components import augment as aug

H, W = 64, 48


def _person(height: int, width: int):
    """A red rectangle (the person) on a blue photo, and its exact mask."""
    image = np.zeros((height, width, 3), np.float32)
    image[..., 2] = 1.0
    mask = np.zeros((height, width, 1), np.float32)
    top, left = height // 4, width // 3
    image[top : height - top, left : width - left] = (1.0, 0.0, 0.0)
    mask[top : height - top, left : width - left] = 1.0
    return tf.constant(image), tf.constant(mask)


@pytest.fixture(scope="module")
def views():
    tf.random.set_seed(0)
    image, mask = _person(round(H * aug.MARGIN), round(W * aug.MARGIN))
    other = tf.random.uniform([90, 70, 3])
    return [aug.augment(image, mask, other, H, W) for _ in range(150)]


def test_shapes_and_ranges(views):
    for image, mask in views:
        assert image.shape == (H, W, 3) and mask.shape == (H, W, 1)
        assert float(tf.reduce_min(image)) >= 0.0 and float(tf.reduce_max(image)) <= 1.0
        assert float(tf.reduce_min(mask)) >= 0.0 and float(tf.reduce_max(mask)) <= 1.0


def test_mask_stays_on_the_person(views):
    """Where the mask is sure, the pixel is still the person's red (up to
    colour jitter, grayscale and blur): geometry moved image and mask together."""
    agreeing = []
    for image, mask in views:
        sure = mask[..., 0].numpy() > 0.99
        if sure.sum() < 20:
            continue
        pixels = image.numpy()[sure]
        agreeing.append(np.mean(pixels[:, 0] >= pixels[:, 2]))
    assert len(agreeing) > 100
    assert np.median(agreeing) > 0.95


def test_zoom_out_and_new_backgrounds_happen(views):
    """Some views shrink the person well below its share of the source, and
    some replace the blue backdrop."""
    source_share = float(np.mean(_person(H, W)[1]))
    shares = np.array([float(tf.reduce_mean(mask)) for _, mask in views])
    assert np.mean(shares < 0.6 * source_share) > 0.1
    assert np.mean(shares > 0.8 * source_share) > 0.4
    blue_backgrounds = [
        np.mean(image.numpy()[mask[..., 0].numpy() < 0.01][:, 2] > 0.8)
        for image, mask in views
        if (mask.numpy() < 0.01).any()  # a close-up may show no background at all
    ]
    assert np.mean(np.array(blue_backgrounds) < 0.5) > 0.2


def test_zoom_in_frames_the_upper_body(views):
    """Some views are close-ups: the person fills far more of the frame than any
    plain crop allows, and the crop starts near the top of the person."""
    source_share = float(np.mean(_person(H, W)[1]))
    close_ups = [
        mask[..., 0].numpy() for _, mask in views if float(tf.reduce_mean(mask)) > 2 * source_share
    ]
    assert len(close_ups) >= 0.08 * len(views)
    for mask in close_ups:
        first_row = np.argmax((mask > 0.5).any(axis=1))
        assert first_row < 0.4 * H


def test_photos_without_a_person_still_augment():
    """The close-up looks for the person; a photo with none (a negative example)
    must not fail the input pipeline."""
    tf.random.set_seed(1)
    image = tf.random.uniform([round(H * aug.MARGIN), round(W * aug.MARGIN), 3])
    empty = tf.zeros([round(H * aug.MARGIN), round(W * aug.MARGIN), 1])
    for _ in range(30):
        out, mask = aug.augment(image, empty, image, H, W)
        assert out.shape == (H, W, 3) and float(tf.reduce_max(mask)) == 0.0


def _edge_strength(image: tf.Tensor) -> float:
    """The steepest step between neighbours: 1 for a sharp edge."""
    return float(tf.reduce_max(tf.abs(image[:, 1:] - image[:, :-1])))


def test_blur_keeps_mean_and_softens_edges():
    tf.random.set_seed(1)
    image, _ = _person(H, W)
    blurred = aug._blur(image)
    assert blurred.shape == image.shape
    assert float(tf.reduce_mean(blurred)) == pytest.approx(float(tf.reduce_mean(image)), abs=1e-2)
    assert _edge_strength(blurred) < 0.7 * _edge_strength(image)
