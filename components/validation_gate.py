"""Stops the run before training when ExampleValidator found anomalies.

ExampleValidator only records anomalies; without a gate the Trainer would go on
training on data that breaks the schema.
"""

import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils

from components.errors import PipelineStopped

ExampleAnomalies = tfx.types.standard_artifacts.ExampleAnomalies
ANOMALIES_FILE = "SchemaDiff.pb"


def read_anomalies(anomalies: ExampleAnomalies) -> dict[str, list[str]]:
    """Split name -> readable anomaly descriptions."""
    found: dict[str, list[str]] = {}
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        path = os.path.join(artifact_utils.get_split_uri([anomalies], split), ANOMALIES_FILE)
        proto = anomalies_pb2.Anomalies()
        proto.ParseFromString(tf.io.gfile.GFile(path, "rb").read())
        lines = [
            f"{feature}: {info.short_description or info.description}"
            for feature, info in sorted(proto.anomaly_info.items())
        ]
        if proto.HasField("dataset_anomaly_info"):
            lines.append(f"<dataset>: {proto.dataset_anomaly_info.description}")
        if lines:
            found[split] = lines
    return found


@tfx.dsl.components.component
def ValidationGate(  # noqa: N802 - TFX names components like classes
    anomalies: tfx.dsl.components.InputArtifact[ExampleAnomalies],
) -> None:
    found = read_anomalies(anomalies)
    if found:
        details = "; ".join(f"[{split}] " + ", ".join(items) for split, items in found.items())
        raise PipelineStopped(f"data validation found anomalies, not training: {details}")
