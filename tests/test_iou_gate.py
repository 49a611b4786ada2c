"""The blessing rule and the IoU scoring the Evaluator runs."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.iou_evaluator import Scores, decide, score_models
from serving import defaults


def s(iou):
    return Scores(foreground_iou=iou, mean_iou=iou, images=10)


@pytest.mark.parametrize(
    ("candidate", "baseline", "min_improvement", "blessed", "words"),
    [
        (0.70, None, 0.01, True, "no baseline"),
        (0.40, None, 0.01, False, "below min_iou"),
        (0.70, 0.75, 0.01, False, "does not reach"),
        (0.75, 0.75, 0.01, False, "does not reach"),
        (0.75, 0.75, 0.0, True, ">= baseline"),
        (0.755, 0.75, 0.01, False, "does not reach"),
        (0.80, 0.75, 0.01, True, ">= baseline"),
        (0.45, 0.30, 0.01, False, "below min_iou"),
    ],
)
def test_decide(candidate, baseline, min_improvement, blessed, words):
    ok, reason = decide(s(candidate), s(baseline) if baseline else None, 0.5, min_improvement)
    assert ok is blessed
    assert words in reason


def timed(iou, ms):
    return Scores(foreground_iou=iou, mean_iou=iou, images=10, latency_ms=ms)


@pytest.mark.parametrize(
    ("candidate", "baseline", "min_speedup", "blessed", "words"),
    [
        # The ninth run against the seventh: level, and a fifth faster.
        (timed(0.9198, 14.4), timed(0.9192, 17.9), 0.1, True, "faster: 14.4 ms against 17.9"),
        (timed(0.9198, 14.4), timed(0.9192, 17.9), 0.0, False, "does not reach"),
        (timed(0.9198, 16.5), timed(0.9192, 17.9), 0.1, False, "nor as accurate and faster"),
        (timed(0.9190, 9.0), timed(0.9192, 17.9), 0.1, False, "nor as accurate and faster"),
        (timed(0.9198, 14.4), s(0.9192), 0.1, False, "does not reach"),  # not measured
        (timed(0.95, 30.0), timed(0.90, 10.0), 0.1, True, "+ min_improvement"),
    ],
)
def test_an_as_accurate_and_faster_model_is_blessed(
    candidate, baseline, min_speedup, blessed, words
):
    ok, reason = decide(candidate, baseline, 0.5, 0.001, min_speedup)
    assert ok is blessed
    assert words in reason


def test_latencies_are_measured_at_each_models_own_size(tmp_path):
    """Real SavedModels: the same weights at 16 times the pixels take longer."""
    import keras

    from components.export import export_saved_model
    from components.iou_evaluator import median_latencies_ms

    def unet(size):
        inputs = keras.Input((size, size, 3))
        x = keras.layers.Conv2D(32, 3, padding="same", name="a")(inputs)
        x = keras.layers.Conv2D(32, 3, padding="same", name="b")(x)
        return keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid", name="c")(x))

    small, large = unet(64), unet(256)
    large.set_weights(small.get_weights())
    export_saved_model(small, str(tmp_path / "small"))
    export_saved_model(large, str(tmp_path / "large"))
    loaded = {name: tf.saved_model.load(str(tmp_path / name)) for name in ("small", "large")}
    ms = median_latencies_ms(loaded, runs=20)
    assert 0 < ms["small"] < ms["large"], ms


def test_no_eval_images_is_never_blessed():
    ok, reason = decide(Scores(0.0, 0.0, 0), None, 0.0, 0.0)
    assert not ok and "no images" in reason


def _example(image: np.ndarray, mask: np.ndarray, example_id: str = "") -> bytes:
    def png(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG")
        return buf.getvalue()

    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png(image)])),
        "mask": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png(mask)])),
    }
    if example_id:
        feature["id"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[example_id.encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_score_models_against_numpy(tmp_path):
    """A fake 'model' that predicts the left half: IoU is known exactly per image."""
    masks = [np.zeros((20, 40), np.uint8) for _ in range(3)]
    masks[0][:, :20] = 255  # exactly the left half: IoU 1
    masks[1][:, :10] = 255  # a quarter: IoU 0.5
    masks[2][:, 30:] = 255  # disjoint: IoU 0
    path = str(tmp_path / "eval.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for m in masks:
            writer.write(_example(np.zeros((20, 40, 3), np.uint8), m))
    by_folder = str(tmp_path / "by_folder.gz")
    with tf.io.TFRecordWriter(by_folder, options="GZIP") as writer:
        for m, example_id in zip(masks, ("big/a", "small/b", "big/c"), strict=True):
            writer.write(_example(np.zeros((20, 40, 3), np.uint8), m, example_id))

    def left_half(images):
        n = tf.shape(images)[0]
        half = tf.concat([tf.fill([8, 4], 255), tf.zeros([8, 4], tf.int32)], axis=1)
        return {
            defaults.OUTPUT_MASK: tf.cast(tf.tile(half[None], [n, 1, 1]), tf.uint8),
            defaults.OUTPUT_HEIGHT: tf.fill([n], 20),
            defaults.OUTPUT_WIDTH: tf.fill([n], 40),
        }

    scores = score_models([path], {"candidate": left_half}, threshold=0.5, batch_size=2)
    got = scores["candidate"]
    assert got.images == 3
    assert got.mean_iou == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    # Dataset-level: intersections 400 + 200 + 0 over unions 400 + 400 + 600.
    assert got.foreground_iou == pytest.approx(600 / 1400)
    assert got.by_folder == {}  # one folder: nothing to tell apart

    folders = ["big/", "small/"]
    got = score_models([by_folder], {"candidate": left_half}, 0.5, 2, folders)["candidate"]
    assert got.by_folder == pytest.approx({"big": 0.5, "small": 0.5})
    assert got.mean_iou == pytest.approx(0.5)

    # Photos the baseline trained on (moved into eval by added photos) are left out for all.
    got = score_models([by_folder], {"candidate": left_half}, 0.5, 2, folders, left_out={"big/c"})[
        "candidate"
    ]
    assert got.images == 2 and got.mean_iou == pytest.approx((1.0 + 0.5) / 2)


def test_train_ids_are_kept_beside_the_model_and_read_back(tmp_path):
    from components import seen_photos

    path = str(tmp_path / "train.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for example_id in ("v2_0001", "v1_0001"):
            writer.write(
                _example(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), example_id)
            )
    ids = seen_photos.example_ids([str(tmp_path / "*.gz")])
    assert ids == ["v1_0001", "v2_0001"]
    seen_photos.write(str(tmp_path), ids)
    assert seen_photos.read(str(tmp_path)) == {"v1_0001", "v2_0001"}
    assert seen_photos.read(str(tmp_path / "older-model")) is None


def test_the_gate_reads_the_baselines_train_ids_from_its_artifact(tmp_path):
    from tfx.types import standard_artifacts

    from components import iou_evaluator, seen_photos

    baseline = standard_artifacts.Model()
    baseline.uri = str(tmp_path / "model" / "7")
    assert iou_evaluator._seen_by(baseline) == set()  # trained before ids were saved
    (tmp_path / "model" / "7" / "keras").mkdir(parents=True)
    seen_photos.write(str(tmp_path / "model" / "7" / "keras"), ["v1_0001"])
    assert iou_evaluator._seen_by(baseline) == {"v1_0001"}
    assert iou_evaluator._seen_by(None) == set()


def test_photos_are_known_by_folder_so_adding_a_folder_renames_nothing(tmp_path):
    from components import iou_evaluator, seen_photos

    alone = seen_photos.photo_keys(["v1_0001"], ["/data/tiktok"])
    together = seen_photos.photo_keys(["tiktok/v1_0001", "mine/a"], ["/data/tiktok", "/x/mine"])
    assert alone["v1_0001"] == together["tiktok/v1_0001"] == "/data/tiktok::v1_0001"
    assert together["mine/a"] == "/x/mine::a"

    path = str(tmp_path / "eval.gz")  # after adding /x/mine, v1_0001 moved into eval
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for example_id in ("tiktok/v1_0001", "mine/a"):
            blank = np.zeros((4, 4), np.uint8)
            writer.write(_example(np.zeros((4, 4, 3), np.uint8), blank, example_id))
    seen = set(alone.values())
    left_out = iou_evaluator._left_out([path], seen, ["/data/tiktok", "/x/mine"])
    assert left_out == {"tiktok/v1_0001"}
    # All of them seen: nothing would be compared, and nothing blessed ever again.
    everything = seen | {"/x/mine::a"}
    assert iou_evaluator._left_out([path], everything, ["/data/tiktok", "/x/mine"]) == set()

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")  # the same photos through a link
    by_link = seen_photos.photo_keys(["p"], [str(tmp_path / "link")])
    assert by_link == seen_photos.photo_keys(["p"], [str(tmp_path / "real")])


def test_a_warm_start_also_remembers_what_its_base_model_trained_on(tmp_path):
    from types import SimpleNamespace

    from components import seen_photos, trainer_module

    path = str(tmp_path / "train.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        blank = np.zeros((4, 4), np.uint8)
        writer.write(_example(np.zeros((4, 4, 3), np.uint8), blank, "v2_0001"))
    base = tmp_path / "base" / "keras"
    base.mkdir(parents=True)
    seen_photos.write(str(base), ["/d::v1_0001"])
    cfg, fn_args = {"data_dirs": ["/d"]}, SimpleNamespace(train_files=[path])
    warm = trainer_module._trained_on(cfg, fn_args, str(base / trainer_module.KERAS_FILE))
    assert warm == ["/d::v1_0001", "/d::v2_0001"]
    assert trainer_module._trained_on(cfg, fn_args, "models/bgremover/1") == ["/d::v2_0001"]
