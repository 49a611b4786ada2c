"""tf.data input pipeline: decode and augment in parallel, then prefetch.

Photos are decoded once at a margin above the model size and cached, so each
epoch only crops, flips and jitters tensors instead of decoding JPEGs again.
"""

from __future__ import annotations

import tensorflow as tf

from components import augment as aug
from components import preprocessing as pp

_AUTOTUNE = tf.data.AUTOTUNE


def _records(patterns: list[str]) -> tf.data.Dataset:
    """TFX hands over split globs such as ``.../Split-train/*``."""
    files = sorted(f for p in patterns for f in tf.io.gfile.glob(p))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {patterns}")
    return tf.data.TFRecordDataset(files, compression_type="GZIP", num_parallel_reads=_AUTOTUNE)


def _decode(height: int, width: int, size_factor: float):
    big_h, big_w = round(height * size_factor), round(width * size_factor)

    def decode(serialized):
        example = tf.io.parse_single_example(serialized, pp.FEATURE_SPEC)
        image = pp.resize_image(pp.decode_rgb(example[pp.IMAGE_KEY]), big_h, big_w)
        mask = pp.resize_mask(pp.decode_mask(example[pp.MASK_KEY]), big_h, big_w)
        return image, mask, example[pp.ID_KEY]

    return decode


def _repeated(repeats: dict[str, int]):
    """Each photo as often as the count of the first id prefix it starts with
    (once when none matches); copies come from the decode cache, not from disk."""

    def copies(image, mask, example_id):
        count = tf.constant(1, tf.int64)
        for prefix, n in reversed(repeats.items()):
            starts = tf.strings.substr(example_id, 0, len(prefix)) == prefix
            count = tf.where(starts, tf.constant(n, tf.int64), count)
        return tf.data.Dataset.from_tensors((image, mask)).repeat(count)

    return copies


def _without_id(image, mask, _):
    return image, mask


def _in_validation(percent: int):
    """A stable slice of the train split by a hash of the id: model selection
    must not see the eval split that the IoU gate judges on."""

    def pick(serialized):
        example_id = tf.io.parse_single_example(serialized, {pp.ID_KEY: pp.FEATURE_SPEC[pp.ID_KEY]})
        return tf.strings.to_hash_bucket_fast(example_id[pp.ID_KEY], 100) < percent

    return pick


def train_dataset(
    files: list[str],
    height: int,
    width: int,
    batch_size: int,
    augmented: bool = True,
    validation_percent: int = 0,
    repeats: dict[str, int] | None = None,
) -> tf.data.Dataset:
    """``repeats`` maps id prefixes (pairs.id_prefixes) to copies per epoch."""
    factor = aug.MARGIN if augmented else 1.0
    pick = _in_validation(validation_percent)
    ds = _records(files).filter(lambda s: tf.logical_not(pick(s)))
    ds = ds.map(_decode(height, width, factor), num_parallel_calls=_AUTOTUNE).cache()
    ds = ds.flat_map(_repeated(repeats)) if repeats else ds.map(_without_id)
    ds = ds.shuffle(512, reshuffle_each_iteration=True)
    if augmented:
        # A second, differently shuffled pass lends each photo another's scenery.
        others = ds.map(lambda image, _: image).shuffle(64)
        ds = tf.data.Dataset.zip(ds, others).map(
            lambda pair, other: aug.augment(*pair, other, height, width),
            num_parallel_calls=_AUTOTUNE,
        )
    return ds.batch(batch_size).prefetch(_AUTOTUNE)


def eval_dataset(
    files: list[str], height: int, width: int, batch_size: int, validation_percent: int = 0
) -> tf.data.Dataset:
    """All of ``files``, or with validation_percent only train's validation slice."""
    ds = _records(files)
    if validation_percent:
        ds = ds.filter(_in_validation(validation_percent))
    ds = ds.map(_decode(height, width, 1.0), num_parallel_calls=_AUTOTUNE)
    ds = ds.map(_without_id).cache()
    return ds.batch(batch_size).prefetch(_AUTOTUNE)


def foreground_fraction(ds: tf.data.Dataset) -> float:
    """Mean share of person pixels in the (unbatched or batched) masks of ds."""
    total = ds.reduce(
        (tf.constant(0.0, tf.float64), tf.constant(0.0, tf.float64)),
        lambda acc, batch: (
            acc[0] + tf.reduce_sum(tf.cast(batch[1], tf.float64)),
            acc[1] + tf.cast(tf.size(batch[1]), tf.float64),
        ),
    )
    return float(total[0] / max(float(total[1]), 1.0))
