"""tf.data input pipeline: decode and augment in parallel, then prefetch.

Photos are decoded once at a margin above the model size and cached, so each
epoch only crops, flips and jitters tensors instead of decoding JPEGs again.
With ``turned``, photos train at the input size they are served at: a landscape
photo for a portrait model at the transposed size (``preprocessing.runs_turned``),
in batches of one orientation.
"""

from __future__ import annotations

import functools

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


def _copies(example_id: tf.Tensor, repeats: dict[str, int]) -> tf.Tensor:
    """The count of the first id prefix the photo's id starts with (1 when none matches)."""
    count = tf.constant(1, tf.int64)
    for prefix, n in reversed(repeats.items()):
        starts = tf.strings.substr(example_id, 0, len(prefix)) == prefix
        count = tf.where(starts, tf.constant(n, tf.int64), count)
    return count


def _repeated(repeats: dict[str, int]):
    """Each photo as often as its folder's count; copies come from the decode
    cache, not from disk."""

    def copies(image, mask, example_id):
        return tf.data.Dataset.from_tensors((image, mask)).repeat(_copies(example_id, repeats))

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


def _orientations(
    records: tf.data.Dataset, height: int, width: int, turned: bool
) -> list[tuple[tf.data.Dataset, int, int]]:
    """The records for each input size photos run at, with that size: one part,
    or with ``turned`` the upright photos and those served turned, as
    ``preprocessing.runs_turned`` decides from the stored photo's size."""
    if not turned or height == width:
        return [(records, height, width)]
    sizes = {k: pp.FEATURE_SPEC[k] for k in (pp.HEIGHT_KEY, pp.WIDTH_KEY)}

    def turns(serialized):
        size = tf.io.parse_single_example(serialized, sizes)
        return pp.runs_turned(size[pp.HEIGHT_KEY], size[pp.WIDTH_KEY], height, width)

    return [
        (records.filter(lambda s: tf.logical_not(turns(s))), height, width),
        (records.filter(turns), width, height),
    ]


def _training_batches(
    records: tf.data.Dataset,
    height: int,
    width: int,
    batch_size: int,
    augmented: bool,
    repeats: dict[str, int] | None,
) -> tf.data.Dataset:
    factor = aug.MARGIN if augmented else 1.0
    ds = records.map(_decode(height, width, factor), num_parallel_calls=_AUTOTUNE).cache()
    ds = ds.flat_map(_repeated(repeats)) if repeats else ds.map(_without_id)
    ds = ds.shuffle(512, reshuffle_each_iteration=True)
    if augmented:
        # A second, differently shuffled pass lends each photo another's scenery.
        others = ds.map(lambda image, _: image).shuffle(64)
        ds = tf.data.Dataset.zip(ds, others).map(
            lambda pair, other: aug.augment(*pair, other, height, width),
            num_parallel_calls=_AUTOTUNE,
        )
    return ds.batch(batch_size)


def _photo_count(records: tf.data.Dataset, repeats: dict[str, int] | None) -> int:
    """Photos per epoch, repeats included: a pass over the records that parses ids only."""
    ids = records.map(
        lambda s: tf.io.parse_single_example(s, {pp.ID_KEY: pp.FEATURE_SPEC[pp.ID_KEY]})
    )
    copies = ids.map(lambda example: _copies(example[pp.ID_KEY], repeats or {}))
    return int(copies.reduce(tf.constant(0, tf.int64), lambda total, n: total + n))


def train_dataset(
    files: list[str],
    height: int,
    width: int,
    batch_size: int,
    augmented: bool = True,
    validation_percent: int = 0,
    repeats: dict[str, int] | None = None,
    turned: bool = False,
) -> tf.data.Dataset:
    """``repeats`` maps id prefixes (pairs.id_prefixes) to copies per epoch."""
    records = _train_records(files, validation_percent)
    parts = _orientations(records, height, width, turned)
    batches = [_training_batches(r, h, w, batch_size, augmented, repeats) for r, h, w in parts]
    if len(batches) == 1:
        return batches[0].prefetch(_AUTOTUNE)
    # Both orientations spread over the epoch, each batch drawn as often as its share.
    counts = [_photo_count(r, repeats) for r, _, _ in parts]
    ds = tf.data.Dataset.sample_from_datasets(
        batches,
        weights=[n / max(sum(counts), 1) for n in counts],
        stop_on_empty_dataset=False,
        rerandomize_each_iteration=True,
    )
    return ds.prefetch(_AUTOTUNE)


def leaves_train_photos(files: list[str], validation_percent: int) -> bool:
    """Whether the validation slice leaves any photo to train on (nothing decoded)."""
    return any(True for _ in _train_records(files, validation_percent).take(1))


def _train_records(files: list[str], validation_percent: int) -> tf.data.Dataset:
    """The train split's records outside the validation slice."""
    pick = _in_validation(validation_percent)
    return _records(files).filter(lambda s: tf.logical_not(pick(s)))


def eval_dataset(
    files: list[str],
    height: int,
    width: int,
    batch_size: int,
    validation_percent: int = 0,
    turned: bool = False,
) -> tf.data.Dataset:
    """All of ``files``, or with validation_percent only train's validation slice."""
    records = _records(files)
    if validation_percent:
        records = records.filter(_in_validation(validation_percent))
    batches = [
        r.map(_decode(h, w, 1.0), num_parallel_calls=_AUTOTUNE)
        .map(_without_id)
        .cache()
        .batch(batch_size)
        for r, h, w in _orientations(records, height, width, turned)
    ]
    return functools.reduce(tf.data.Dataset.concatenate, batches).prefetch(_AUTOTUNE)


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
