"""ImageExampleGen: a TFX ExampleGen for folders of photos and person masks.

The executor lists pairs (paths only), assigns each video group to train or
eval, then a Beam pipeline reads, validates and normalises one pair at a time
and writes gzipped TFRecords of tf.Examples, plus an ingestion report.  Its
output is the standard ``examples`` channel, so StatisticsGen, SchemaGen and
Trainer consume it like any ExampleGen's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import apache_beam as beam
import tensorflow as tf
from absl import logging
from tfx import types
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components import ingestion_report as report_lib
from components import pairs as pairs_lib
from components.decode import Decoded, Rejected, decode_pair
from components.preprocessing import HEIGHT_KEY, ID_KEY, IMAGE_KEY, MASK_KEY, WIDTH_KEY
from components.uris import is_uri
from serving.images import MAX_OPENED_PIXELS, allow_pixels, unreadable_reason
from tfx_pipeline.config import PipelineConfig

FOREGROUND_FRACTION_KEY = "foreground_fraction"
EXAMPLES_KEY = "examples"
FINGERPRINT_PROPERTY = "input_fingerprint"
_DEFAULTS = PipelineConfig()


@dataclass(frozen=True)
class IngestionSettings:
    """What the executor needs, rebuilt from exec properties."""

    data_dirs: list[str]
    group_pattern: str
    eval_fraction: float
    max_side: int
    min_usable_fraction: float

    @classmethod
    def from_exec_properties(cls, exec_properties: dict[str, Any]) -> IngestionSettings:
        return cls(
            data_dirs=list(json.loads(exec_properties["data_dirs"])),
            group_pattern=exec_properties.get("group_pattern") or "",
            eval_fraction=float(exec_properties["eval_fraction"]),
            max_side=int(exec_properties["max_side"]),
            min_usable_fraction=float(exec_properties["min_usable_fraction"]),
        )


class ImageExampleGenSpec(ComponentSpec):
    PARAMETERS = {
        "data_dirs": ExecutionParameter(type=str),  # JSON list of folders
        "group_pattern": ExecutionParameter(type=str),
        "eval_fraction": ExecutionParameter(type=float),
        "max_side": ExecutionParameter(type=int),
        "min_usable_fraction": ExecutionParameter(type=float),
        # Changes whenever a file changes, so unchanged inputs hit the cache.
        FINGERPRINT_PROPERTY: ExecutionParameter(type=str),
    }
    INPUTS: dict[str, ChannelParameter] = {}
    OUTPUTS = {EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}


def to_example(pair_id: str, decoded: Decoded) -> tf.train.Example:
    def feature_bytes(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def feature_int(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(
        features=tf.train.Features(
            feature={
                IMAGE_KEY: feature_bytes(decoded.image),
                MASK_KEY: feature_bytes(decoded.mask),
                HEIGHT_KEY: feature_int(decoded.height),
                WIDTH_KEY: feature_int(decoded.width),
                ID_KEY: feature_bytes(pair_id.encode("utf-8")),
                FOREGROUND_FRACTION_KEY: tf.train.Feature(
                    float_list=tf.train.FloatList(value=[decoded.foreground_fraction])
                ),
            }
        )
    )


class DecodePairFn(beam.DoFn):
    """One pair's files in, a serialized example (tagged by split) and an outcome out."""

    def __init__(self, max_side: int) -> None:
        self._max_side = max_side

    def setup(self) -> None:
        # Phones shoot 200 MP, past Pillow's decompression-bomb guard; draft decoding
        # keeps such JPEGs small here.  The same limit as bgremove's.
        allow_pixels(MAX_OPENED_PIXELS)

    def process(self, item: tuple[pairs_lib.Pair, str]) -> Iterator[Any]:
        pair, split = item
        try:
            decoded = decode_pair(_read(pair.image), _read(pair.mask), self._max_side)
        except Rejected as rejected:
            logging.info("skipping %s: %s", pair.name, rejected)
            yield report_lib.skipped(rejected.reason, pair.name)
            return
        except Exception as error:  # a bad file must never stop the whole run
            logging.warning("skipping %s: unexpected %r", pair.name, error)
            yield report_lib.skipped("decode_error", pair.name)
            return
        example = to_example(pair.id, decoded).SerializeToString()
        yield beam.pvalue.TaggedOutput(split, example)
        yield report_lib.usable(split, decoded.foreground_fraction, pair.folder)
        if decoded.note:
            yield report_lib.noted(decoded.note, pair.name)


def _read(path: str) -> bytes:
    if not is_uri(path) and not os.path.isfile(path):  # a pipe would block forever
        raise Rejected("read_error", f"{path}: {unreadable_reason(path)}")
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except (tf.errors.OpError, OSError) as error:
        raise Rejected("read_error", str(error)) from error


class Executor(base_beam_executor.BaseBeamExecutor):
    """Lists and splits pairs, then streams them through Beam into TFRecords."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        settings = IngestionSettings.from_exec_properties(exec_properties)
        outputs = output_dict[EXAMPLES_KEY]
        examples = artifact_utils.get_single_instance(outputs)
        examples.split_names = artifact_utils.encode_split_names(list(pairs_lib.SPLITS))

        report_path = os.path.join(examples.uri, report_lib.REPORT_NAME)
        tf.io.gfile.makedirs(examples.uri)

        listing = pairs_lib.list_pairs(settings.data_dirs, settings.group_pattern)
        if not listing.pairs:
            _fail_without_pairs(settings, listing, report_path)
        group_split = pairs_lib.assign_splits(
            listing.pairs, settings.eval_fraction, settings.group_pattern
        )
        listing.warnings += pairs_lib.coarse_group_warnings(listing.pairs, settings.eval_fraction)
        for warning in listing.warnings:
            logging.warning("ingestion: %s", warning)
        # Hash order interleaves videos in the output; only paths are held here.
        work = [
            (pair, group_split[pair.group])
            for pair in sorted(listing.pairs, key=lambda p: pairs_lib.unit_hash(p.id))
        ]
        context = {
            "data_dirs": settings.data_dirs,
            "settings": asdict(settings),
            "warnings": listing.warnings,
            "groups": {
                split: sum(1 for s in group_split.values() if s == split)
                for split in pairs_lib.SPLITS
            },
        }

        with self._make_beam_pipeline() as pipeline:
            decoded = (
                pipeline
                | "ListPairs" >> beam.Create(work)
                | "DecodePairs"
                >> beam.ParDo(DecodePairFn(settings.max_side)).with_outputs(
                    *pairs_lib.SPLITS, main="outcomes"
                )
            )
            for split in pairs_lib.SPLITS:
                prefix = os.path.join(
                    artifact_utils.get_split_uri(outputs, split),
                    write_split.DEFAULT_TF_RECORD_FILE_NAME,
                )
                _ = decoded[split] | f"Write[{split}]" >> beam.io.WriteToTFRecord(
                    prefix, file_name_suffix=".gz"
                )
            listing_skips = [report_lib.skipped(s.reason, s.name) for s in listing.skipped]
            _ = (
                (decoded.outcomes, pipeline | "ListingSkips" >> beam.Create(listing_skips))
                | "AllOutcomes" >> beam.Flatten()
                | "Count" >> beam.CombineGlobally(report_lib.CountOutcomes())
                | "Report" >> beam.Map(_write_report, pairs_lib.SPLITS, context, report_path)
            )

        report = report_lib.read_report(report_path)
        logging.info("ingestion report (%s): %s", report_path, json.dumps(report))
        for note, found in report["noted"].items():
            logging.warning(
                "ingestion: %d pairs used but worth a look, %s (e.g. %s)",
                found["count"],
                note,
                ", ".join(found["examples"][:3]),
            )
        report_lib.check_report(report, settings.min_usable_fraction)

        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(
            examples, write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP)
        )
        examples.set_string_custom_property(
            FINGERPRINT_PROPERTY, exec_properties.get(FINGERPRINT_PROPERTY, "")
        )
        examples.span = 0


def _write_report(
    counts: dict[str, dict], splits: Sequence[str], context: dict[str, Any], path: str
) -> None:
    report_lib.write_report(report_lib.build_report(counts, splits, context), path)


def _fail_without_pairs(
    settings: IngestionSettings, listing: pairs_lib.Listing, report_path: str
) -> None:
    """No pair at all: report and say which folder and what was found instead."""
    counts = report_lib.CountOutcomes()
    acc = counts.create_accumulator()
    for skip in listing.skipped:
        acc = counts.add_input(acc, report_lib.skipped(skip.reason, skip.name))
    report = report_lib.build_report(
        acc, pairs_lib.SPLITS, {"data_dirs": settings.data_dirs, "warnings": listing.warnings}
    )
    report_lib.write_report(report, report_path)
    report_lib.check_report(report, settings.min_usable_fraction)


class ImageExampleGen(base_beam_component.BaseBeamComponent):
    """Ingests ``images/`` + ``masks/`` folders into train/eval tf.Examples.

    ``input_fingerprint`` defaults to one computed now from the folders' files,
    so building the pipeline again over unchanged data reuses the cached run.
    """

    SPEC_CLASS = ImageExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(
        self,
        data_dirs: Sequence[str],
        group_pattern: str = _DEFAULTS.group_pattern,
        eval_fraction: float = _DEFAULTS.eval_fraction,
        max_side: int = _DEFAULTS.max_side,
        min_usable_fraction: float = _DEFAULTS.min_usable_fraction,
        input_fingerprint: str | None = None,
    ) -> None:
        data_dirs = [str(d) for d in data_dirs]
        if not data_dirs:
            raise ValueError("ImageExampleGen needs at least one data folder")
        if not 0.0 < eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be between 0 and 1, got {eval_fraction}")
        spec = ImageExampleGenSpec(
            data_dirs=json.dumps(data_dirs),
            group_pattern=group_pattern,
            eval_fraction=float(eval_fraction),
            max_side=int(max_side),
            min_usable_fraction=float(min_usable_fraction),
            input_fingerprint=input_fingerprint or pairs_lib.input_fingerprint(data_dirs),
            examples=types.Channel(type=standard_artifacts.Examples),
        )
        super().__init__(spec=spec)
