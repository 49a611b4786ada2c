"""data_repeats: a small folder's train photos appear more often per epoch."""

import argparse

import numpy as np
import pytest
import tensorflow as tf

from components import dataset, pairs
from components import preprocessing as pp
from tests.serving_fixtures import png_bytes
from tfx_pipeline import config as config_lib


def _write_records(path, ids: list[str]) -> None:
    """One tiny photo per id whose pixels encode its position in ``ids``."""
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for index, example_id in enumerate(ids):
            image = np.full((8, 8, 3), index, np.uint8)
            mask = np.zeros((8, 8), np.uint8)
            features = {
                pp.IMAGE_KEY: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[png_bytes(image)])
                ),
                pp.MASK_KEY: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[png_bytes(mask)])
                ),
                pp.HEIGHT_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[8])),
                pp.WIDTH_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[8])),
                pp.ID_KEY: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[example_id.encode()])
                ),
            }
            example = tf.train.Example(features=tf.train.Features(feature=features))
            writer.write(example.SerializeToString())


def _photos_seen(path, repeats) -> list[int]:
    ds = dataset.train_dataset([str(path)], 8, 8, 4, augmented=False, repeats=repeats)
    seen = [round(float(image[0, 0, 0]) * 255) for images, _ in ds for image in images]
    return sorted(seen)


def test_each_folder_repeats_its_photos(tmp_path):
    big, small = "/data/people", "/data/portraits"
    prefix_big, prefix_small = pairs.id_prefixes([big, small])
    ids = [f"{prefix_big}a", f"{prefix_big}b", f"{prefix_small}c"]
    path = tmp_path / "train.gz"
    _write_records(path, ids)
    assert _photos_seen(path, {prefix_big: 1, prefix_small: 3}) == [0, 1, 2, 2, 2]
    assert _photos_seen(path, {prefix_big: 2, prefix_small: 1}) == [0, 0, 1, 1, 2]
    assert _photos_seen(path, None) == [0, 1, 2]


def test_counts_must_match_the_folders():
    with pytest.raises(ValueError, match="one count per data_dirs folder"):
        config_lib.PipelineConfig(data_dirs=["a", "b"], data_repeats=[2])
    with pytest.raises(ValueError, match="at least 1"):
        config_lib.PipelineConfig(data_dirs=["a", "b"], data_repeats=[1, 0])


def test_counts_come_from_flags_as_numbers():
    parser = argparse.ArgumentParser()
    config_lib.add_arguments(parser)
    args = parser.parse_args(["--data-dir", "a", "--data-dir", "b", "--data-repeats", "1", "3"])
    assert config_lib.from_args(args).data_repeats == [1, 3]
