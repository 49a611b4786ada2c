"""Anomalies found by ExampleValidator stop the run before training, named."""

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils

from components.validation_gate import ANOMALIES_FILE, ValidationGate, read_anomalies


def _anomalies_artifact(tmp_path, eval_anomalies: anomalies_pb2.Anomalies):
    artifact = tfx.types.standard_artifacts.ExampleAnomalies()
    artifact.uri = str(tmp_path)
    artifact.split_names = artifact_utils.encode_split_names(["train", "eval"])
    for split, proto in (("train", anomalies_pb2.Anomalies()), ("eval", eval_anomalies)):
        folder = tmp_path / f"Split-{split}"
        folder.mkdir()
        (folder / ANOMALIES_FILE).write_bytes(proto.SerializeToString())
    return artifact


def _run_gate(artifact):
    executor = ValidationGate.EXECUTOR_SPEC.executor_class()
    executor.Do({"anomalies": [artifact]}, {}, {})


def test_clean_statistics_pass(tmp_path):
    artifact = _anomalies_artifact(tmp_path, anomalies_pb2.Anomalies())
    assert read_anomalies(artifact) == {}
    _run_gate(artifact)


def test_anomalies_stop_the_run_and_are_named(tmp_path):
    proto = anomalies_pb2.Anomalies()
    proto.anomaly_info["foreground_fraction"].short_description = "Out-of-range values"
    artifact = _anomalies_artifact(tmp_path, proto)
    assert read_anomalies(artifact) == {"eval": ["foreground_fraction: Out-of-range values"]}
    with pytest.raises(RuntimeError, match=r"\[eval\] foreground_fraction: Out-of-range"):
        _run_gate(artifact)
