"""The ingestion report: what was kept, what was skipped and why, and when to give up.

Each pair's outcome is a small tuple combined inside Beam, so the report costs
no memory per photo; examples of skipped files are the first few by name, so
the report is the same whatever order Beam processed the pairs in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import tensorflow as tf

from components.errors import PipelineStopped

REPORT_NAME = "ingestion_report.json"
EXAMPLES_PER_REASON = 5
USABLE, SKIPPED, NOTED = "usable", "skipped", "noted"
# (USABLE, split, (foreground fraction, folder)), (SKIPPED, reason, name), or
# (NOTED, note, name) for a usable pair worth a look
Outcome = tuple[str, str, Any]
# Files that were never candidates (sidecars, notes, RAW files) and masks without a
# photo or of an ambiguous stem: listed, but they do not count against
# min_usable_fraction.  A df.csv row whose photo is missing does count: a wrong path
# in it must not pass unnoticed.
NOT_PHOTOS = ("unsupported_extension", "mask_without_photo", "duplicate_mask")


class IngestionError(PipelineStopped):
    """Too little usable data: the pipeline must stop before training on it."""


def usable(split: str, foreground_fraction: float, folder: str = "") -> Outcome:
    return (USABLE, split, (foreground_fraction, folder))


def skipped(reason: str, name: str) -> Outcome:
    return (SKIPPED, reason, name)


def noted(note: str, name: str) -> Outcome:
    return (NOTED, note, name)


class CountOutcomes(beam.CombineFn):
    """Counts per split, folder and reason, mean foreground per split, a few names per reason."""

    def create_accumulator(self) -> dict[str, dict]:
        return {
            "splits": {},
            "folders": {},
            "foreground": {},
            "skipped": {},
            "examples": {},
            "noted": {},
            "noted_examples": {},
        }

    def add_input(self, acc: dict[str, dict], outcome: Outcome) -> dict[str, dict]:
        kind, key, value = outcome
        if kind == USABLE:
            foreground, folder = value
            acc["splits"][key] = acc["splits"].get(key, 0) + 1
            acc["folders"][folder] = acc["folders"].get(folder, 0) + 1
            acc["foreground"][key] = acc["foreground"].get(key, 0.0) + float(foreground)
        else:
            counts, examples = (
                ("skipped", "examples") if kind == SKIPPED else ("noted", "noted_examples")
            )
            acc[counts][key] = acc[counts].get(key, 0) + 1
            names = acc[examples].setdefault(key, [])
            names.append(value)
            names.sort()
            del names[EXAMPLES_PER_REASON:]
        return acc

    def merge_accumulators(self, accumulators) -> dict[str, dict]:
        merged = self.create_accumulator()
        for acc in accumulators:
            for field in ("splits", "folders", "foreground", "skipped", "noted"):
                for key, value in acc[field].items():
                    merged[field][key] = merged[field].get(key, 0) + value
            for field in ("examples", "noted_examples"):
                for reason, names in acc[field].items():
                    kept = sorted(merged[field].get(reason, []) + names)
                    merged[field][reason] = kept[:EXAMPLES_PER_REASON]
        return merged

    def extract_output(self, acc: dict[str, dict]) -> dict[str, dict]:
        return acc


def build_report(
    counts: dict[str, dict], splits: Sequence[str], context: dict[str, Any]
) -> dict[str, Any]:
    """The JSON report from combined counts plus what the listing step knew."""
    per_split = {split: counts["splits"].get(split, 0) for split in splits}
    usable_count = sum(per_split.values())
    skipped_count = sum(counts["skipped"].values())
    not_photos = sum(counts["skipped"].get(reason, 0) for reason in NOT_PHOTOS)
    photos = usable_count + skipped_count - not_photos
    reasons = sorted(counts["skipped"].items())
    folders = context.get("data_dirs") or []
    return {
        **context,
        "usable": usable_count,
        "skipped": skipped_count,
        "photos": photos,  # usable and skipped, not counting files that are no photos
        "usable_fraction": round(usable_count / photos, 4) if photos else 0.0,
        "splits": per_split,
        "usable_by_folder": {
            folder: counts.get("folders", {}).get(folder, 0) for folder in folders
        },
        "mean_foreground_fraction": {
            split: round(counts["foreground"].get(split, 0.0) / per_split[split], 4)
            for split in splits
            if per_split[split]
        },
        "skipped_by_reason": dict(reasons),
        "skipped_examples": {reason: counts["examples"][reason] for reason, _ in reasons},
        # Used, but worth a look: key -> {"count", "examples"}.
        "noted": {
            note: {"count": count, "examples": counts["noted_examples"][note]}
            for note, count in sorted(counts.get("noted", {}).items())
        },
    }


def write_report(report: dict[str, Any], path: str) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(report, indent=2, sort_keys=True) + "\n")


def read_report(path: str) -> dict[str, Any]:
    with tf.io.gfile.GFile(path, "r") as f:
        return json.loads(f.read())


def check_report(report: dict[str, Any], min_usable_fraction: float) -> None:
    """Raise IngestionError naming the folders and the top reasons when data is too poor."""
    folders = ", ".join(report.get("data_dirs", [])) or "(no folder given)"
    if report["usable"] == 0:
        raise IngestionError(
            f"no usable image/mask pairs in {folders}; {top_reasons(report)}" + _warnings(report)
        )
    barren = [folder for folder, count in report.get("usable_by_folder", {}).items() if not count]
    if barren:
        raise IngestionError(
            f"{', '.join(barren)} gave no usable pair (missing, empty, or every file "
            f"skipped); fix it or leave it out of data_dirs; {top_reasons(report)}"
            + _warnings(report)
        )
    if report["usable_fraction"] < min_usable_fraction:
        raise IngestionError(
            f"only {report['usable']} of {report['photos']} photos in "
            f"{folders} are usable ({report['usable_fraction']:.0%} < min_usable_fraction "
            f"{min_usable_fraction:.0%}); {top_reasons(report)}"
        )
    empty = [split for split, count in report["splits"].items() if count == 0]
    if empty:
        raise IngestionError(
            f"the {' and '.join(empty)} split has no usable pair in {folders} after skipping "
            f"bad files (groups per split before skipping: {report.get('groups')}); fix the "
            'files or set group_pattern = "" so that every photo is its own group; '
            + top_reasons(report)
        )


def top_reasons(report: dict[str, Any], limit: int = 3) -> str:
    by_count = sorted(report["skipped_by_reason"].items(), key=lambda item: (-item[1], item[0]))
    reasons = by_count[:limit]
    if not reasons:
        return "nothing was skipped"
    parts = [
        f"{reason}: {count} (e.g. {', '.join(report['skipped_examples'][reason][:2])})"
        for reason, count in reasons
    ]
    return "top reasons: " + "; ".join(parts)


def _warnings(report: dict[str, Any]) -> str:
    warnings = report.get("warnings") or []
    return "; " + "; ".join(warnings) if warnings else ""
