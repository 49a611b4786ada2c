"""What the export serves on top of the network: the decision threshold chosen where
validation IoU peaks and moved to 0.5, and the optional mirror average."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from components import calibration, inference
from components import preprocessing as pp
from components.export import export_saved_model
from components.export import main as export_main
from components.inference import ServingSettings
from components.unet import build_unet
from serving import defaults
from tests.serving_fixtures import mirror_gap, png_bytes


def test_recentre_puts_the_threshold_at_one_half_and_keeps_the_order():
    p = tf.constant(np.linspace(0.0, 1.0, 101), tf.float32)
    moved = calibration.recentre(p, 0.7).numpy()
    assert moved[0] == 0.0 and moved[-1] == 1.0
    assert moved[70] == pytest.approx(0.5, abs=1e-6)
    assert (np.diff(moved) > 0).all()
    # The same pixels fall on each side of the cut as before.
    np.testing.assert_array_equal(moved > 0.5, p.numpy() > 0.7 + 1e-6)
    assert calibration.recentre(p, 0.5) is p
    with pytest.raises(ValueError, match="strictly between"):
        calibration.recentre(p, 1.0)


def _batches(cut: float):
    """Probabilities spread evenly over [0, 1], the truth everything above ``cut``."""
    rng = np.random.default_rng(0)
    for _ in range(3):
        p = rng.uniform(size=(4, 16, 16, 1)).astype(np.float32)
        yield tf.constant(p), tf.constant((p > cut).astype(np.float32))


@pytest.mark.parametrize("cut, expected", [(0.63, 0.65), (0.5, 0.5), (0.37, 0.35)])
def test_best_threshold_is_the_candidate_nearest_the_true_cut(cut, expected):
    best, means = calibration.best_threshold(lambda images: images, _batches(cut))
    assert best == expected
    assert set(means) == set(calibration.CANDIDATES)
    assert means[best] == max(means.values())
    assert means[best] > means[0.3] + 0.05


def test_best_threshold_needs_photos():
    with pytest.raises(ValueError, match="no validation photos"):
        calibration.best_threshold(lambda images: images, [])


@pytest.mark.parametrize("size", [(32, 32), (32, 16)], ids=["square", "portrait"])
def test_every_signature_serves_the_recentred_probabilities(tmp_path, size):
    """Upright photos, and on a portrait model a landscape photo, which runs turned."""
    keras.utils.set_random_seed(7)
    height, width = size
    model = build_unet(height, width, filters=4, depth=2)
    export_saved_model(model, str(tmp_path / "plain"))
    export_saved_model(model, str(tmp_path / "moved"), ServingSettings(decision_threshold=0.7))
    assert inference.exported(str(tmp_path / "moved")) == ServingSettings(0.7)
    assert inference.exported(str(tmp_path / "plain")) == ServingSettings()
    assert inference.exported(str(tmp_path)) is None  # no record: not one of ours
    plain, moved = (tf.saved_model.load(str(tmp_path / n)) for n in ("plain", "moved"))

    pixels = tf.random.uniform((1, height, width, 3), seed=1)
    expected = calibration.recentre(model(pixels), 0.7).numpy()
    assert np.abs(expected - model(pixels).numpy()).max() > 0.01  # the remap shows
    served = moved.signatures[defaults.SIGNATURE_FLOAT](pixels=pixels)["probabilities"]
    np.testing.assert_allclose(served.numpy(), expected, atol=1e-6)

    rng = np.random.default_rng(1)
    photos = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(64, 32, 3), (30, 70, 3)]]
    images = tf.constant([png_bytes(photo) for photo in photos])
    features = [
        {pp.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[i.numpy()]))}
        for i in images
    ]
    examples = tf.constant(
        [
            tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString()
            for f in features
        ]
    )
    for signature, call in [
        (defaults.SIGNATURE_BYTES, lambda fn: fn(**{defaults.INPUT_IMAGES: images})),
        (defaults.SIGNATURE_EXAMPLES, lambda fn: fn(examples=examples)),
    ]:
        before, after = (call(m.signatures[signature]) for m in (plain, moved))
        if signature == defaults.SIGNATURE_BYTES:
            before = before[defaults.OUTPUT_MASK].numpy() / 255.0
            after = after[defaults.OUTPUT_MASK].numpy() / 255.0
            tolerance = 2.5 / 255  # both rounded to uint8; the remap's slope is up to 2.3
        else:
            before, after = before["probabilities"].numpy(), after["probabilities"].numpy()
            tolerance = 1e-5
        assert np.abs(after - before).max() > 0.01
        recentred = calibration.recentre(tf.constant(before, tf.float32), 0.7).numpy()
        np.testing.assert_allclose(after, recentred, atol=tolerance)


def test_flip_average_serves_masks_that_mirror_with_the_photo(tmp_path):
    """On a portrait model, for an upright photo and for a landscape one (which runs
    turned), and in the float signature."""
    keras.utils.set_random_seed(4)  # an untrained net, far from mirror-symmetric
    model = build_unet(32, 16, filters=4, depth=2)
    export_saved_model(model, str(tmp_path / "plain"))
    export_saved_model(model, str(tmp_path / "flip"), ServingSettings(flip_average=True))
    plain, flip = (tf.saved_model.load(str(tmp_path / n)).signatures for n in ("plain", "flip"))
    rng = np.random.default_rng(5)
    for shape in [(64, 32, 3), (30, 70, 3)]:
        photo = rng.integers(0, 256, shape, dtype=np.uint8)
        assert mirror_gap(plain[defaults.SIGNATURE_BYTES], photo) > 3  # the test can tell
        assert mirror_gap(flip[defaults.SIGNATURE_BYTES], photo) <= 1

    pixels = tf.random.uniform((2, 32, 16, 3), seed=6)
    served = flip[defaults.SIGNATURE_FLOAT]
    mirrored = tf.reverse(model(tf.reverse(pixels, [2])), [2])
    np.testing.assert_allclose(
        served(pixels=pixels)["probabilities"].numpy(),
        ((model(pixels) + mirrored) / 2).numpy(),
        atol=1e-5,
    )


def test_a_re_export_serves_as_the_trainer_settled_unless_told_otherwise(tmp_path):
    model = build_unet(32, 16, filters=4, depth=2)
    model.save(tmp_path / "model.keras")
    inference.save(str(tmp_path), ServingSettings(0.6, True), validation_mean_iou={"0.60": 0.8})
    saved = json.loads((tmp_path / inference.SETTINGS_FILE).read_text())
    assert saved["decision_threshold"] == 0.6 and saved["flip_average"] is True
    assert inference.load(str(tmp_path)) == ServingSettings(0.6, True)
    assert inference.load(str(tmp_path / "none")) == ServingSettings()
    pixels = tf.constant(np.random.default_rng(2).random((1, 32, 16, 3)), tf.float32)

    def served(export_dir):
        signature = tf.saved_model.load(str(export_dir)).signatures[defaults.SIGNATURE_FLOAT]
        return signature(pixels=pixels)["probabilities"].numpy()

    keras_file = str(tmp_path / "model.keras")
    export_main([keras_file, str(tmp_path / "saved")])
    expected = inference.served(model, pixels, ServingSettings(0.6, True)).numpy()
    np.testing.assert_allclose(served(tmp_path / "saved"), expected, atol=1e-6)
    export_main(
        [
            keras_file,
            str(tmp_path / "told"),
            "--decision-threshold",
            "0.5",
            "--flip-average",
            "false",
        ]
    )
    np.testing.assert_allclose(served(tmp_path / "told"), model(pixels).numpy(), atol=1e-6)
