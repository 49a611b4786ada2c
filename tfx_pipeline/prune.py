"""Frees the disk space of old pipeline runs.

TFX keeps every run's artifacts: a copy of the examples whenever the photos change
(about 100 MB for ccp and hsd) and 20-40 MB of Trainer output a run, and
LocalDagRunner has no garbage collection. This deletes the artifacts that none of
the last runs read or wrote, but never the last blessed model, which the next run
compares with and warm-starts from. Each deleted artifact is marked DELETED in ML
Metadata: TFX's cache and input resolvers take LIVE artifacts only, so no later
run reuses what is gone.

    python -m tfx_pipeline.prune --config configs/real.toml --keep-runs 3 [--dry-run]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass, field

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

from tfx_pipeline import config as config_lib
from tfx_pipeline.local_runner import RootInUse, only_run_in

_LIVE = metadata_store_pb2.Artifact.LIVE
_DELETED = metadata_store_pb2.Artifact.DELETED


@dataclass
class Pruned:
    runs: int = 0  # pipeline runs in the store
    kept_runs: int = 0
    deleted: list[str] = field(default_factory=list)  # artifact folders
    freed_bytes: int = 0
    blessed_model: str | None = None


def _metadata_path(root: str) -> str:
    path = os.path.join(root, "metadata.sqlite")
    if not os.path.isfile(path):
        raise ValueError(f"{root}: no ML Metadata store (metadata.sqlite); has a run used it?")
    return path


def _store(root: str) -> mlmd.MetadataStore:
    path = _metadata_path(root)
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = path
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE
    return mlmd.MetadataStore(connection)


def _executions(store: mlmd.MetadataStore, runs: list[metadata_store_pb2.Context]) -> set[int]:
    return {e.id for run in runs for e in store.get_executions_by_context(run.id)}


def _used_by(store: mlmd.MetadataStore, executions: set[int]) -> set[int]:
    """Artifacts the executions read or wrote (a cached step links the old outputs)."""
    return {event.artifact_id for event in store.get_events_by_execution_ids(list(executions))}


def _producers(store: mlmd.MetadataStore, artifact_id: int) -> set[int]:
    events = store.get_events_by_artifact_ids([artifact_id])
    return {e.execution_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT}


def _last_blessing(store: mlmd.MetadataStore) -> metadata_store_pb2.Artifact | None:
    """The newest positive ModelBlessing: with its model, what the next run resolves."""
    blessings = [
        b
        for b in store.get_artifacts_by_type("ModelBlessing")
        if b.state == _LIVE and b.custom_properties["blessed"].int_value == 1
    ]
    return max(blessings, key=lambda b: b.id, default=None)


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(path)
        for name in names
    )


def _inside(path: str, root: str) -> bool:
    """Only the pipeline root's own folders: a pushed model's copy in the serving
    folder is recorded elsewhere and served."""
    return os.path.commonpath([os.path.realpath(path), os.path.realpath(root)]) == (
        os.path.realpath(root)
    )


def _leftovers(root: str, executions: set[int], kept_uris: set[str]) -> list[str]:
    """Folders ``<node>/<output>/<execution id>`` of older executions that ML Metadata
    never recorded as artifacts: a failed step's outputs and TFX's working folders."""
    found = []
    for node in sorted(os.listdir(root)):
        node_dir = os.path.join(root, node)
        if node.startswith(("_", ".")) or node == "train_backup" or not os.path.isdir(node_dir):
            continue  # wheels, the run lock, checkpoints of an interrupted run
        for key in sorted(os.listdir(node_dir)):
            key_dir = os.path.join(node_dir, key)
            if not os.path.isdir(key_dir):
                continue
            for name in sorted(os.listdir(key_dir)):
                path = os.path.join(key_dir, name)
                old = name.isdigit() and int(name) not in executions
                if old and os.path.realpath(path) not in kept_uris:
                    found.append(path)
    return found


def _remove(path: str) -> int:
    size = _size(path)
    if os.path.isdir(path):
        shutil.rmtree(path)
    else:
        os.remove(path)
    return size


def prune(root: str, keep_runs: int, dry_run: bool = False) -> Pruned:
    if keep_runs < 1:
        raise ValueError("keep_runs must be at least 1: the last run's artifacts are the cache")
    store = _store(root)
    runs = sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.id)
    kept = runs[-keep_runs:]
    result = Pruned(runs=len(runs), kept_runs=len(kept))
    executions = _executions(store, kept)
    keep = set()
    blessing = _last_blessing(store)
    if blessing is not None:
        model_id = blessing.custom_properties["current_model_id"].int_value
        [model] = store.get_artifacts_by_id([model_id])
        result.blessed_model = model.uri
        keep |= {blessing.id, model_id}
        executions |= _producers(store, model_id)  # with its run's TensorBoard logs
    keep |= _used_by(store, executions)
    kept_uris = {os.path.realpath(a.uri) for a in store.get_artifacts_by_id(list(keep)) if a.uri}
    gone = [
        artifact
        for artifact in store.get_artifacts()
        if artifact.id not in keep
        and artifact.state != _DELETED
        and artifact.uri
        and _inside(artifact.uri, root)
    ]
    paths = [a.uri for a in gone if os.path.exists(a.uri)]
    counted = {os.path.realpath(path) for path in paths}
    paths += [
        path
        for path in _leftovers(root, executions, kept_uris)
        if os.path.realpath(path) not in counted
    ]
    result.deleted = paths
    if dry_run:
        result.freed_bytes = sum(_size(path) for path in paths)
        return result
    # Marked first: a prune stopped halfway leaves folders for the next one to remove,
    # never a LIVE artifact whose folder is gone for TFX's cache to hand out.
    for artifact in gone:
        artifact.state = _DELETED
    if gone:
        store.put_artifacts(gone)
    result.freed_bytes = sum(_remove(path) for path in paths)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tfx_pipeline.prune",
        description="Delete the artifacts of old pipeline runs, keeping the last blessed model.",
    )
    parser.add_argument("--config", help="TOML config whose pipeline_root to prune")
    parser.add_argument("--pipeline-root", help="the pipeline root (default: the config's)")
    parser.add_argument(
        "--keep-runs", type=int, default=3, help="runs whose artifacts stay (%(default)s)"
    )
    parser.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")
    args = parser.parse_args(argv)
    try:
        config = config_lib.load(args.config)
        root = args.pipeline_root or config.pipeline_root
        if config_lib.is_uri(root):
            raise ValueError(
                f"{root} is in an object store: use its lifecycle rules; this prunes local roots"
            )
        _metadata_path(root)  # before the lock, which would create a mistyped root
        with only_run_in(root):
            result = prune(os.path.abspath(root), args.keep_runs, args.dry_run)
    except (ValueError, RootInUse) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    verb = "would free" if args.dry_run else "freed"
    print(
        f"{root}: {len(result.deleted)} artifact folders of older runs, "
        f"{verb} {result.freed_bytes / 1e6:.1f} MB; kept the last {result.kept_runs} of "
        f"{result.runs} runs and the last blessed model ({result.blessed_model or 'none yet'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
