"""The guided upsampling follows the photo's edges where bilinear cannot."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from serving import refine


def _scene(size=(600, 800)):
    """A bright disc (the person) on a dark, slightly textured photo, and its truth."""
    rng = np.random.default_rng(0)
    photo = Image.fromarray((rng.random((size[1], size[0], 3)) * 40).astype(np.uint8))
    truth = Image.new("L", size, 0)
    box = (150, 200, 450, 600)
    ImageDraw.Draw(photo).ellipse(box, fill=(230, 210, 190))
    ImageDraw.Draw(truth).ellipse(box, fill=255)
    return photo, np.asarray(truth) > 127


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


def _soft_share(mask: np.ndarray) -> float:
    """Share of pixels that are neither clearly person nor clearly background."""
    return float(np.mean((mask > 25) & (mask < 230)))


def test_edges_snap_to_the_photo():
    photo, truth = _scene()
    # The model's view: a blurry 48x64 mask, edges spread over several photo pixels.
    coarse = Image.fromarray(truth.astype(np.uint8) * 255).resize((48, 64), Image.BOX)
    mask = np.asarray(coarse)
    bilinear = np.asarray(coarse.resize(photo.size, Image.Resampling.BILINEAR))
    refined = refine.guided_upsample(mask, photo)
    assert refined.size == photo.size and refined.mode == "L"
    assert _soft_share(np.asarray(refined)) < 0.5 * _soft_share(bilinear)
    assert _iou(np.asarray(refined) > 127, truth) >= _iou(bilinear > 127, truth)
    assert _iou(np.asarray(refined) > 127, truth) > 0.97


def test_flat_photo_keeps_the_mask():
    """With no edges to follow the filter only smooths: nothing is invented, little lost."""
    photo = Image.new("RGB", (320, 240), (90, 90, 90))
    disc = Image.new("L", (64, 48), 0)
    ImageDraw.Draw(disc).ellipse((16, 8, 48, 40), fill=255)
    mask = np.asarray(disc)
    bilinear = np.asarray(Image.fromarray(mask).resize(photo.size, Image.Resampling.BILINEAR))
    refined = np.asarray(refine.guided_upsample(mask, photo))
    assert not np.any((refined > 127) & (bilinear < 10))
    assert _iou(refined > 127, bilinear > 127) > 0.9


def test_rejects_a_batch():
    with pytest.raises(ValueError, match="2-D"):
        refine.guided_upsample(np.zeros((1, 8, 8), np.uint8), Image.new("RGB", (8, 8)))
