"""The whole pipeline through LocalDagRunner on a tiny generated set.

Three runs share one pipeline root and ML Metadata store, as a user's would:
a first model is pushed; an untrained one is evaluated against it and not
pushed; a warm-started, longer-trained one beats it, is pushed as a higher
version, and RolloutCheck sees a running local server serve it. Pruning then frees
the old runs' artifacts, and a rerun does not reuse what was deleted.
"""

import json
import os
from pathlib import Path

import ml_metadata as mlmd
import pytest
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2

from serving import defaults
from tests.serving_fixtures import start_local_server
from tfx_pipeline import config as config_lib
from tfx_pipeline import local_runner, prune

pytestmark = pytest.mark.slow

NODES = {
    "ImageExampleGen",
    "StatisticsGen",
    "SchemaGen",
    "ExampleValidator",
    "ValidationGate",
    "latest_blessed_model_resolver",
    "Trainer",
    "IoUEvaluator",
    "Pusher",
}


def _config(root: Path, **overrides) -> config_lib.PipelineConfig:
    settings = dict(
        pipeline_root=str(root / "pipeline_root"),
        serving_dir=str(root / "serving"),
        synthetic_count=64,
        validation_fraction=0.2,
        image_height=64,
        image_width=64,
        unet_filters=8,
        unet_depth=3,
        epochs=6,
        batch_size=8,
        learning_rate=5e-3,
        min_iou=0.1,
        min_improvement=0.01,
        # The strong augmentation (tests/test_augment.py) slows learning on 64
        # stick figures past what a few epochs show; the push logic is under test.
        augment=False,
    )
    settings.update(overrides)
    return config_lib.load(**settings)


def _store(config) -> mlmd.MetadataStore:
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = os.path.abspath(config.metadata_sqlite)
    return mlmd.MetadataStore(connection)


def _versions(serving_dir: Path) -> list[int]:
    model_dir = serving_dir / defaults.MODEL_NAME
    return sorted(int(p.name) for p in model_dir.iterdir()) if model_dir.exists() else []


def _latest_evaluation(store) -> dict:
    [blessing_type] = [t for t in store.get_artifact_types() if t.name == "ModelBlessing"]
    blessings = sorted(store.get_artifacts_by_type(blessing_type.name), key=lambda a: a.id)
    return json.loads((Path(blessings[-1].uri) / "evaluation.json").read_text())


def test_pipeline_pushes_only_better_models(tmp_path):
    first = _config(tmp_path)
    local_runner.run(first)
    store = _store(first)

    node_contexts = {c.name.split(".")[-1]: c for c in store.get_contexts_by_type("node")}
    assert set(node_contexts) >= NODES, sorted(node_contexts)
    complete = metadata_store_pb2.Execution.COMPLETE
    for name in NODES - {"latest_blessed_model_resolver"}:
        states = [
            e.last_known_state for e in store.get_executions_by_context(node_contexts[name].id)
        ]
        assert complete in states, f"{name} did not complete: {states}"

    [v1] = _versions(tmp_path / "serving")
    loaded = tf.saved_model.load(str(tmp_path / "serving" / defaults.MODEL_NAME / str(v1)))
    assert {defaults.SIGNATURE_BYTES, defaults.SIGNATURE_FLOAT, defaults.SIGNATURE_EXAMPLES} <= set(
        loaded.signatures
    )
    first_eval = _latest_evaluation(store)
    assert first_eval["blessed"] and first_eval["baseline"] is None

    # From here on a server serves the pushed models, and each run checks the rollout.
    server = start_local_server(tmp_path / "serving")
    try:
        # An untrained model: evaluated against the pushed one, and not pushed.
        local_runner.run(
            _config(tmp_path, learning_rate=0.0, epochs=1, rollout_server=server.address)
        )
        second_eval = _latest_evaluation(store)
        assert not second_eval["blessed"], second_eval
        # Both timed side by side for the speed rule; not needed without a baseline.
        assert second_eval["candidate"]["latency_ms"] > 0 < second_eval["baseline"]["latency_ms"]
        assert first_eval["candidate"]["latency_ms"] == 0
        assert second_eval["baseline"]["foreground_iou"] == pytest.approx(
            first_eval["candidate"]["foreground_iou"], abs=1e-6
        )
        assert _versions(tmp_path / "serving") == [v1]
        # Same data: no eval photo was in the baseline's train split.
        assert second_eval["left_out_seen_by_baseline"] == 0

        # Warm-started from the blessed model and trained longer: better, pushed higher.
        local_runner.run(
            _config(tmp_path, warm_start=True, epochs=12, rollout_server=server.address)
        )
        third_eval = _latest_evaluation(store)
        assert third_eval["blessed"], third_eval
        assert (
            third_eval["candidate"]["foreground_iou"]
            > first_eval["candidate"]["foreground_iou"] + 0.01
        )
        versions = _versions(tmp_path / "serving")
        assert len(versions) == 2 and versions[-1] > v1
        assert versions[-1] in server.store.served_versions()
    finally:
        server.stop(grace=0)
    [check] = [c for c in store.get_contexts_by_type("node") if c.name.endswith("RolloutCheck")]
    states = [e.last_known_state for e in store.get_executions_by_context(check.id)]
    assert states == [complete, complete], states  # nothing to check, then version 2 served

    # Pruning to the last run frees the untrained model and keeps what the next run needs.
    trainer = node_contexts["Trainer"].id
    models = sorted(
        (a for a in store.get_artifacts_by_context(trainer) if a.type == "Model"),
        key=lambda a: a.id,
    )
    assert len(models) == 3
    root = Path(first.pipeline_root)
    leftover = root / "Trainer" / "model" / "999999"  # a failed step's, never recorded
    leftover.mkdir()
    stranger = root / "serving" / "bgremover" / "3"  # not the pipeline's: not touched
    stranger.mkdir(parents=True)
    (stranger / "saved_model.pb").write_bytes(b"x")
    pruned = prune.prune(first.pipeline_root, keep_runs=1)
    assert models[1].uri in pruned.deleted and not Path(models[1].uri).exists()
    assert not leftover.exists() and (stranger / "saved_model.pb").exists()
    assert Path(models[0].uri).exists()  # the third run's baseline
    assert pruned.blessed_model == models[2].uri and Path(models[2].uri).exists()
    [gone] = store.get_artifacts_by_id([models[1].id])
    assert gone.state == metadata_store_pb2.Artifact.DELETED
    # The second run again, in the pruned root: it trains anew, as its model is gone.
    local_runner.run(_config(tmp_path, learning_rate=0.0, epochs=1))
    trainer_runs = store.get_executions_by_context(trainer)
    assert trainer_runs[-1].last_known_state == complete, trainer_runs[-1]
    assert not _latest_evaluation(store)["blessed"]

    # Fine-tuning in a fresh pipeline root: the exported model it starts from is the bar,
    # so a run that learns nothing is not pushed as if there were no baseline.
    fresh, start = tmp_path / "fresh", tmp_path / "serving" / defaults.MODEL_NAME / str(v1)
    local_runner.run(_config(fresh, init_model=str(start), learning_rate=0.0, epochs=1))
    fresh_eval = _latest_evaluation(_store(_config(fresh)))
    assert fresh_eval["baseline_model"] == str(start) and fresh_eval["baseline"], fresh_eval
    assert not fresh_eval["blessed"] and not _versions(fresh / "serving"), fresh_eval


def test_curated_schema_stops_data_outside_its_domains(tmp_path):
    """configs/schema (ImportSchemaGen) is what ExampleValidator checks: data
    outside a tightened domain stops the run before the Trainer starts."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    curated = Path(__file__).parents[1] / "configs" / "schema" / "schema.pbtxt"
    schema = text_format.Parse(curated.read_text(), schema_pb2.Schema())
    [fraction] = [f for f in schema.feature if f.name == "foreground_fraction"]
    fraction.float_domain.max = 0.01  # every generated person covers more
    (tmp_path / "schema").mkdir()
    (tmp_path / "schema" / "schema.pbtxt").write_text(text_format.MessageToString(schema))

    config = _config(tmp_path, schema_dir=str(tmp_path / "schema"))
    with pytest.raises(Exception, match="foreground_fraction"):
        local_runner.run(config)
    store = _store(config)
    node_contexts = {c.name.split(".")[-1]: c for c in store.get_contexts_by_type("node")}
    assert "ImportSchemaGen" in node_contexts and "SchemaGen" not in node_contexts
    assert "ValidationGate" in node_contexts and "Trainer" not in node_contexts
