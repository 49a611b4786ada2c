"""Ingestion throughput: the real ImageExampleGen executor next to plain decode + re-encode.

The executor is run through its Beam executor on a folder, exactly as the
pipeline runs it (same Beam args, same settings from the config).  The raw
figure times ``components.decode.decode_pair`` -- the executor's own decode,
validate and re-encode step -- on the same files in a plain Python loop, so the
gap between the two is what Beam, serialisation and the gzip TFRecord writer cost.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import display_path, log, rate, ratio
from tfx_pipeline.config import PipelineConfig

SECTION = "ingestion"
SYNTHETIC_PAIRS = 200
SYNTHETIC_SIZE = (550, 825)  # like a ccp photo


@dataclass(frozen=True)
class Source:
    name: str  # "ccp" or "synthetic"
    folder: Path
    notes: list[str]


def _subset(ccp_dir: Path, limit: int, workdir: Path) -> Path:
    """The first ``limit`` pairs of df.csv as symlinks in a temporary folder (never copies)."""
    out = workdir / "ccp_subset"
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    with open(ccp_dir / "df.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:limit]
    for row in rows:
        for rel in (row["images"], row["masks"]):
            (out / rel).symlink_to((ccp_dir / rel).resolve())
    with open(out / "df.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["images", "masks"])
        writer.writeheader()
        writer.writerows({"images": r["images"], "masks": r["masks"]} for r in rows)
    return out


def choose_source(ccp_dir: Path, limit: int | None, workdir: Path) -> Source:
    """ccp when present (optionally a subset), else a generated synthetic set."""
    if (ccp_dir / "images").is_dir() and (ccp_dir / "df.csv").is_file():
        folder = _subset(ccp_dir, limit, workdir) if limit else ccp_dir
        return Source("ccp", folder, [])
    from tfx_pipeline.synthetic import generate

    count = limit or SYNTHETIC_PAIRS
    folder = workdir / "synthetic"
    log(SECTION, f"{ccp_dir} not found: generating {count} synthetic pairs instead")
    generate(folder, count, seed=0, size=SYNTHETIC_SIZE)
    note = (
        f"{display_path(ccp_dir)} is not present: measured on {count} generated synthetic "
        f"pairs of {SYNTHETIC_SIZE[0]}x{SYNTHETIC_SIZE[1]} instead"
    )
    return Source("synthetic", folder, [note])


def _raw(pairs: list, max_side: int) -> dict[str, float]:
    """Read + decode + validate + re-encode each pair in one Python loop."""
    from components.decode import Rejected, decode_pair
    from serving.images import MAX_OPENED_PIXELS, allow_pixels

    allow_pixels(MAX_OPENED_PIXELS)  # as the executor's DoFn does
    usable = reencoded = 0
    started = time.perf_counter()
    for pair in pairs:
        try:
            decoded = decode_pair(
                Path(pair.image).read_bytes(), Path(pair.mask).read_bytes(), max_side
            )
        except Rejected:
            continue
        usable += 1
        reencoded += decoded.reencoded
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 3),
        "usable": usable,
        "reencoded": reencoded,
        "pairs_per_s": rate(len(pairs), seconds),
    }


def _executor(folder: Path, config: PipelineConfig, out: Path) -> dict[str, float]:
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.types import standard_artifacts

    from components import pairs as pairs_lib
    from components.image_example_gen import Executor
    from components.ingestion_report import REPORT_NAME

    examples = standard_artifacts.Examples()
    examples.uri = str(out / "examples")
    properties = {
        "data_dirs": json.dumps([str(folder)]),
        "group_pattern": config.group_pattern,
        "eval_fraction": config.eval_fraction,
        "max_side": config.max_side,
        "min_usable_fraction": config.min_usable_fraction,
        "input_fingerprint": pairs_lib.input_fingerprint([str(folder)]),
    }
    context = BaseBeamExecutor.Context(
        beam_pipeline_args=config.beam_args, tmp_dir=str(out / "tmp")
    )
    started = time.perf_counter()
    Executor(context).Do({}, {"examples": [examples]}, properties)
    seconds = time.perf_counter() - started
    report = json.loads((Path(examples.uri) / REPORT_NAME).read_text())
    written = sum(f.stat().st_size for f in Path(examples.uri).rglob("*.gz"))
    return {
        "seconds": round(seconds, 3),
        "usable": report["usable"],
        "splits": report["splits"],
        "pairs_per_s": rate(report["usable"] + report["skipped"], seconds),
        "output_mb": round(written / 1e6, 2),
    }


def run(config: PipelineConfig, ccp_dir: Path, limit: int | None, workdir: Path) -> dict:
    from components import pairs as pairs_lib

    source = choose_source(ccp_dir, limit, workdir)
    listing = pairs_lib.list_pairs([str(source.folder)], config.group_pattern)
    pairs = listing.pairs
    if not pairs:
        raise RuntimeError(f"no image/mask pairs found in {source.folder}")
    for pair in pairs:  # page cache warm for both measurements alike
        Path(pair.image).read_bytes()
        Path(pair.mask).read_bytes()
    log(SECTION, f"{len(pairs)} pairs from {source.name}: decode + re-encode loop")
    raw = _raw(pairs, config.max_side)
    log(SECTION, f"raw: {raw['pairs_per_s']} pairs/s; now the ImageExampleGen executor (Beam)")
    executor = _executor(source.folder, config, workdir / "ingestion_out")
    log(SECTION, f"executor: {executor['pairs_per_s']} pairs/s")
    return {
        "source": source.name,
        "data_dir": display_path(ccp_dir if source.name == "ccp" else source.folder),
        "pairs": len(pairs),
        "max_side": config.max_side,
        "beam_args": list(config.beam_args),
        "executor": executor,
        "raw": raw,
        "executor_vs_raw": ratio(executor["pairs_per_s"], raw["pairs_per_s"]),
        "notes": source.notes
        + [
            "executor: wall time of ImageExampleGen's Executor.Do on the folder (listing, split, "
            "Beam DirectRunner start-up, decode, tf.Example, gzip TFRecords, report)",
            "raw: components.decode.decode_pair (Pillow decode, checks, resize to max_side, "
            "re-encode as ingestion does) on the same files in one Python loop, files read "
            "from the page cache",
        ],
    }
