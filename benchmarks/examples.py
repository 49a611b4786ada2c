"""The pipeline's ingested examples: finding the newest split, or writing a synthetic one."""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import repo_path
from tfx_pipeline.config import PipelineConfig

EXAMPLE_GEN = "ImageExampleGen"


def newest_split(config: PipelineConfig, split: str) -> Path | None:
    """``<pipeline_root>/ImageExampleGen/examples/<newest>/Split-<split>`` with records, or None."""
    root = repo_path(config.pipeline_root) / EXAMPLE_GEN / "examples"
    if not root.is_dir():
        return None
    runs = sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for run in reversed(runs):
        folder = run / f"Split-{split}"
        if any(folder.glob("*.gz")):
            return folder
    return None


def record_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.gz"))


def write_synthetic_split(
    out_file: Path, count: int, size: tuple[int, int], prefixes: tuple[str, ...] = ("",)
) -> Path:
    """Synthetic pairs stored exactly as ImageExampleGen stores them, ids cycling ``prefixes``."""
    import tempfile

    import tensorflow as tf

    from components.decode import decode_pair
    from components.image_example_gen import to_example
    from tfx_pipeline.synthetic import generate

    out_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-synthetic-") as folder:
        ids = generate(folder, count, seed=1, size=size)
        options = tf.io.TFRecordOptions(compression_type="GZIP")
        with tf.io.TFRecordWriter(str(out_file), options) as writer:
            for index, pair_id in enumerate(ids):
                image = next(Path(folder, "images").glob(f"{pair_id}.*")).read_bytes()
                mask = Path(folder, "masks", f"{pair_id}.png").read_bytes()
                name = prefixes[index % len(prefixes)] + pair_id
                writer.write(to_example(name, decode_pair(image, mask)).SerializeToString())
    return out_file


def copy_records(files: list[str], out_file: Path, limit: int) -> int:
    """The first ``limit`` records of ``files`` into one gzip TFRecord; returns how many."""
    import tensorflow as tf

    out_file.parent.mkdir(parents=True, exist_ok=True)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    count = 0
    with tf.io.TFRecordWriter(str(out_file), options) as writer:
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit):
            writer.write(record.numpy())
            count += 1
    return count
