"""Evaluator gated on foreground IoU, never on pixel accuracy.

The candidate and the last blessed model are both scored on the eval split in
one pass, through their ``serving_default`` signature (the path users hit),
with each mask upsampled to the stored photo's resolution.  Their latencies
are measured side by side, so a model as accurate and clearly faster is
rolled out too.  The output is a standard ModelBlessing, so the stock Pusher
and LatestBlessedModelStrategy understand it.
"""

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import tensorflow as tf
from absl import logging
from tfx import v1 as tfx
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import preprocessing as pp
from components import seen_photos
from components.latency import interleaved_seconds
from components.losses import iou_counts
from components.trainer_module import keras_path
from serving import defaults

Examples = tfx.types.standard_artifacts.Examples
Model = tfx.types.standard_artifacts.Model
ModelBlessing = tfx.types.standard_artifacts.ModelBlessing
REPORT_FILE = "evaluation.json"
LATENCY_RUNS = 50


@dataclass
class Scores:
    foreground_iou: float  # sum of intersections / sum of unions over the split
    mean_iou: float  # mean of per-image IoU
    images: int
    latency_ms: float = 0.0  # median in-process, one image at the model's size; 0: not measured
    # Mean per-image IoU of each input folder (with several data_dirs), as `make bench`
    # reports it: a gain on a big folder can hide a loss on a small one.
    by_folder: dict[str, float] = field(default_factory=dict)


def decide(
    candidate: Scores,
    baseline: Scores | None,
    min_iou: float,
    min_improvement: float,
    min_speedup: float = 0.0,
) -> tuple[bool, str]:
    """The rollout rule: above the floor, and better than what is served, or
    as accurate and at least ``min_speedup`` faster."""
    if candidate.images == 0:
        return False, "the eval split has no images"
    if candidate.foreground_iou < min_iou:
        return False, f"IoU {candidate.foreground_iou:.4f} is below min_iou {min_iou:.4f}"
    if baseline is None:
        return True, f"IoU {candidate.foreground_iou:.4f} >= min_iou {min_iou:.4f}; no baseline"
    iou, base = candidate.foreground_iou, baseline.foreground_iou
    needed = f"baseline {base:.4f} + min_improvement {min_improvement:.4f}"
    if iou >= base + min_improvement:
        return True, f"IoU {iou:.4f} >= {needed}"
    reason = f"IoU {iou:.4f} does not reach {needed}"
    if min_speedup <= 0 or not (candidate.latency_ms and baseline.latency_ms):
        return False, reason
    speed = (
        f"{candidate.latency_ms:.1f} ms against {baseline.latency_ms:.1f} ms, "
        f"min_speedup {min_speedup:.0%}"
    )
    if iou >= base and candidate.latency_ms <= baseline.latency_ms * (1.0 - min_speedup):
        return True, f"IoU {iou:.4f} >= baseline {base:.4f} and faster: {speed}"
    return False, f"{reason}, nor as accurate and faster: {speed}"


def median_latencies_ms(loaded_models: dict[str, object], runs: int) -> dict[str, float]:
    """Each model's median latency on one image at its own input size."""
    calls = {}
    for name, loaded in loaded_models.items():
        signature = loaded.signatures[defaults.SIGNATURE_FLOAT]
        shape = signature.structured_input_signature[1]["pixels"].shape
        pixels = tf.random.stateless_uniform([1, *shape[1:]], seed=[0, 0])
        calls[name] = lambda signature=signature, pixels=pixels: signature(pixels=pixels)
    seconds = interleaved_seconds(calls, runs)
    return {name: 1000.0 * float(np.median(values)) for name, values in seconds.items()}


class _Accumulator:
    def __init__(self, folders: Sequence[str]) -> None:
        self.intersection = self.union = 0
        self.per_image: list[float] = []
        self.folders = {folder: [] for folder in folders}

    def add(self, truth: np.ndarray, pred: np.ndarray, example_id: str) -> None:
        inter, union = iou_counts(truth, pred)
        self.intersection += inter
        self.union += union
        iou = 1.0 if union == 0 else inter / union
        self.per_image.append(iou)
        for folder, ious in self.folders.items():
            if example_id.startswith(folder):
                ious.append(iou)
                break

    def scores(self) -> Scores:
        total = self.intersection / self.union if self.union else 0.0
        mean = float(np.mean(self.per_image)) if self.per_image else 0.0
        by_folder = {
            folder.rstrip("/"): float(np.mean(ious))
            for folder, ious in self.folders.items()
            if ious
        }
        return Scores(float(total), mean, len(self.per_image), by_folder=by_folder)


def _predict_full_resolution(signature, images: tf.Tensor, threshold: float) -> list[np.ndarray]:
    out = signature(**{defaults.INPUT_IMAGES: images})
    masks = []
    for mask, h, w in zip(
        out[defaults.OUTPUT_MASK],
        out[defaults.OUTPUT_HEIGHT],
        out[defaults.OUTPUT_WIDTH],
        strict=True,
    ):
        masks.append(pp.upsample_mask(mask, h, w).numpy() > threshold)
    return masks


def score_models(
    eval_files: list[str],
    signatures: dict[str, object],
    threshold: float,
    batch_size: int = 8,
    folders: Sequence[str] = (),
    left_out: frozenset[str] | set[str] = frozenset(),
) -> dict[str, Scores]:
    """Scores each named signature on the same examples in one pass; ``folders``
    are the id prefixes (pairs.id_prefixes) to score apart as well, and the
    examples whose ids are ``left_out`` are not scored."""
    accumulators = {name: _Accumulator(folders) for name in signatures}
    ds = tf.data.TFRecordDataset(eval_files, compression_type="GZIP").batch(batch_size)
    spec = {
        pp.IMAGE_KEY: pp.FEATURE_SPEC[pp.IMAGE_KEY],
        pp.MASK_KEY: pp.FEATURE_SPEC[pp.MASK_KEY],
        pp.ID_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    for serialized in ds:
        parsed = tf.io.parse_example(serialized, spec)
        truths = [pp.decode_mask(m).numpy()[..., 0] > 0.5 for m in parsed[pp.MASK_KEY]]
        ids = [i.decode("utf-8") for i in parsed[pp.ID_KEY].numpy()]
        for name, signature in signatures.items():
            preds = _predict_full_resolution(signature, parsed[pp.IMAGE_KEY], threshold)
            for truth, pred, example_id in zip(truths, preds, ids, strict=True):
                if example_id not in left_out:
                    accumulators[name].add(truth, pred, example_id)
    return {name: acc.scores() for name, acc in accumulators.items()}


def _by_folder_text(scores: dict[str, Scores]) -> str:
    return "; ".join(
        f"{name} " + ", ".join(f"{folder} {iou:.4f}" for folder, iou in s.by_folder.items())
        for name, s in scores.items()
        if s.by_folder
    )


def _seen_by(baseline_model: Model | None) -> set[str]:
    """The baseline's train ids (none for a model trained before they were saved)."""
    if baseline_model is None:
        return set()
    serving_dir = path_utils.serving_model_path(baseline_model.uri)
    return seen_photos.read(os.path.dirname(keras_path(serving_dir))) or set()


def _left_out(eval_files: list[str], seen: set[str], data_dirs: list[str]) -> set[str]:
    """The eval pair ids of photos the baseline trained on; none if that is all of them."""
    if not seen:
        return set()
    keys = seen_photos.photo_keys(seen_photos.example_ids(eval_files), data_dirs)
    left_out = {pair_id for pair_id, key in keys.items() if key in seen}
    if left_out and len(left_out) == len(keys):
        # Nothing would be left to compare on, and nothing could ever be blessed again
        # on these data: compare on them all, and say the baseline has seen them.
        logging.warning(
            "The baseline trained on every one of the %d eval photos (the data folders "
            "changed since it was trained); both models are scored on all of them, which "
            "favours the baseline",
            len(keys),
        )
        return set()
    return left_out


@tfx.dsl.components.component
def IoUEvaluator(  # noqa: N802 - TFX names components like classes
    examples: tfx.dsl.components.InputArtifact[Examples],
    model: tfx.dsl.components.InputArtifact[Model],
    blessing: tfx.dsl.components.OutputArtifact[ModelBlessing],
    baseline_model: tfx.dsl.components.InputArtifact[Model] = None,
    min_iou: tfx.dsl.components.Parameter[float] = 0.5,
    min_improvement: tfx.dsl.components.Parameter[float] = 0.0,
    min_speedup: tfx.dsl.components.Parameter[float] = 0.0,
    threshold: tfx.dsl.components.Parameter[float] = 0.5,
    folders: tfx.dsl.components.Parameter[str] = "[]",  # JSON list of id prefixes
    data_dirs: tfx.dsl.components.Parameter[str] = "[]",  # JSON list: photo keys
    # The exported model training started from: the bar until a model is blessed here,
    # so that fine-tuning in a fresh pipeline root cannot push a model worse than its start.
    init_model: tfx.dsl.components.Parameter[str] = "",
) -> None:
    eval_uri = artifact_utils.get_split_uri([examples], "eval")
    eval_files = tf.io.gfile.glob(os.path.join(eval_uri, "*"))
    loaded = {
        name: tf.saved_model.load(path_utils.serving_model_path(artifact.uri))
        for name, artifact in (("candidate", model), ("baseline", baseline_model))
        if artifact is not None
    }
    baseline_source = baseline_model.uri if baseline_model is not None else None
    if baseline_model is None and init_model:
        loaded["baseline"] = tf.saved_model.load(init_model)
        baseline_source = init_model
        logging.info("No blessed model yet: the baseline is init_model %s", init_model)
    signatures = {name: m.signatures[defaults.SIGNATURE_BYTES] for name, m in loaded.items()}
    seen = _left_out(eval_files, _seen_by(baseline_model), json.loads(data_dirs))
    scores = score_models(
        eval_files, signatures, threshold, folders=json.loads(folders), left_out=seen
    )
    left_out = len(seen)
    if left_out:
        logging.info(
            "Left %d eval photos out of the comparison: the baseline trained on them "
            "(photos added since moved their groups into eval); both models are scored "
            "on the other %d",
            left_out,
            scores["candidate"].images,
        )
    if "baseline" in loaded and min_speedup > 0:
        for name, ms in median_latencies_ms(loaded, LATENCY_RUNS).items():
            scores[name] = replace(scores[name], latency_ms=ms)
    candidate, baseline = scores["candidate"], scores.get("baseline")
    blessed, reason = decide(candidate, baseline, min_iou, min_improvement, min_speedup)
    if baseline_model is not None and baseline_model.id == model.id:
        blessed = False  # pushing it again would only add a copy
        reason = "the candidate is the blessed model itself: training was cached, nothing changed"
    logging.info("IoU gate: %s (%s)", "BLESSED" if blessed else "NOT BLESSED", reason)
    if by_folder := _by_folder_text(scores):
        logging.info("Mean per-image IoU by folder: %s", by_folder)

    blessing.set_int_custom_property("blessed", int(blessed))
    blessing.set_int_custom_property("current_model_id", model.id)
    blessing.set_string_custom_property("current_model", model.uri)
    blessing.set_float_custom_property("foreground_iou", candidate.foreground_iou)
    blessing.set_float_custom_property("mean_iou", candidate.mean_iou)
    blessing.set_string_custom_property("reason", reason)
    if baseline_model is not None:
        blessing.set_int_custom_property("baseline_model_id", baseline_model.id)
    if baseline is not None:
        blessing.set_string_custom_property("baseline_model", baseline_source)
        blessing.set_float_custom_property("baseline_foreground_iou", baseline.foreground_iou)
    report = {
        "blessed": blessed,
        "reason": reason,
        "min_iou": min_iou,
        "min_improvement": min_improvement,
        "min_speedup": min_speedup,
        "threshold": threshold,
        "candidate": asdict(candidate),
        "baseline": asdict(baseline) if baseline else None,
        "baseline_model": baseline_source,
        "left_out_seen_by_baseline": left_out,
    }
    tf.io.gfile.makedirs(blessing.uri)
    with tf.io.gfile.GFile(os.path.join(blessing.uri, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=2)
    with tf.io.gfile.GFile(
        os.path.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"), "w"
    ) as f:
        f.write("")
