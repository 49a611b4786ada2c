"""Which photos a model trained on, so that no gate scores it on them.

Ingestion splits by a hash order of the groups, so adding photos can move an old
group from train to eval.  The last blessed model trained on that group; scored
on it, it looks better than it is and can keep a better candidate from being
blessed.  The Trainer records the ids of its train split beside the Keras model,
and the IoUEvaluator leaves those photos out of the comparison.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from components import preprocessing as pp

FILE_NAME = "train_ids.json"


def example_ids(patterns: list[str]) -> list[str]:
    """The ids of the (gzipped) tf.Examples in the files ``patterns`` match, sorted."""
    files = sorted(f for p in patterns for f in tf.io.gfile.glob(p))
    spec = {pp.ID_KEY: pp.FEATURE_SPEC[pp.ID_KEY]}
    records = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(256)
    ids = []
    for batch in records:
        ids.extend(i.decode("utf-8") for i in tf.io.parse_example(batch, spec)[pp.ID_KEY].numpy())
    return sorted(ids)


def write(keras_folder: str, ids: list[str]) -> None:
    with tf.io.gfile.GFile(os.path.join(keras_folder, FILE_NAME), "w") as f:
        json.dump(ids, f)


def read(keras_folder: str) -> set[str] | None:
    """The train ids saved in ``keras_folder``; None for a model trained before they were."""
    path = os.path.join(keras_folder, FILE_NAME)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return set(json.load(f))
