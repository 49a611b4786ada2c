"""Per model variant: in-process latency at its resolution and foreground IoU per eval set.

IoU is scored like ``components/iou_evaluator.py``, on the masks the model's
``serving_default`` returns (the path users hit): per image, at threshold 0.5,
both at model resolution (ground truth area-downsampled) and at full resolution
(the uint8 mask upsampled bilinearly to the stored photo's size, and with the
client's guided filter).
The eval split is the pipeline's own, read from ImageExampleGen's newest output.
"""

from __future__ import annotations

import io
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import display_path, log, summary_ms, synthetic_photo
from benchmarks.contact_sheet import Row, write_sheet
from benchmarks.examples import newest_split, record_files
from benchmarks.models import input_size
from components.latency import interleaved_seconds
from serving import compositing, refine
from serving.compositing import EDGE_CONTRAST
from tfx_pipeline.config import PipelineConfig

SECTION = "model"
BATCH = 8
# Errors this close to the true outline, in model pixels, count as edge errors.
EDGE_BAND = 1.0
# Close-ups cut from eval photos that show a person whole: from a tenth of the person's
# height above the head down to this share of it (head and shoulders), if at least this
# many pixels tall (the model's input is 256).
CLOSEUP_DEPTH = 0.45
CLOSEUP_MIN_PIXELS = 96


@dataclass(frozen=True)
class EvalExample:
    pair_id: str
    set_name: str
    image: bytes
    mask: bytes


@dataclass
class SetScores:
    iou_model: list[float] = field(default_factory=list)
    iou_full: list[float] = field(default_factory=list)
    iou_refined: list[float] = field(default_factory=list)
    refine_ms: list[float] = field(default_factory=list)
    lost_at_edge: list[float] = field(default_factory=list)
    lost_elsewhere: list[float] = field(default_factory=list)
    alpha_error: list[float] = field(default_factory=list)
    alpha_error_mask: list[float] = field(default_factory=list)
    iou_closeup: list[float] = field(default_factory=list)
    intersection: int = 0
    union: int = 0
    rows: list[Row] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {
            "images": len(self.iou_full),
            "mean_iou_model_res": round(float(np.mean(self.iou_model)), 4),
            "mean_iou_full_res": round(float(np.mean(self.iou_full)), 4),
            "mean_iou_full_res_refined": round(float(np.mean(self.iou_refined)), 4),
            "refine_ms_median": round(float(np.median(self.refine_ms)), 2),
            "iou_lost_at_edge": round(float(np.mean(self.lost_at_edge)), 4),
            "iou_lost_elsewhere": round(float(np.mean(self.lost_elsewhere)), 4),
            "alpha_error": round(float(np.mean(self.alpha_error)), 4),
            "alpha_error_model_mask": round(float(np.mean(self.alpha_error_mask)), 4),
            "closeups": len(self.iou_closeup),
            "mean_iou_closeup": round(float(np.mean(self.iou_closeup)), 4)
            if self.iou_closeup
            else None,
            "foreground_iou_full_res": round(self.intersection / self.union, 4)
            if self.union
            else 1.0,
        }


def set_name(pair_id: str) -> str:
    """``ccp/0001`` -> ``ccp``; ids of a single-folder run have no prefix."""
    prefix, sep, _ = pair_id.partition("/")
    return prefix if sep else "eval"


def read_eval(folder: Path, limit_per_set: int | None) -> list[EvalExample]:
    import tensorflow as tf

    from components import preprocessing as pp

    spec = {key: pp.FEATURE_SPEC[key] for key in (pp.IMAGE_KEY, pp.MASK_KEY, pp.ID_KEY)}
    counts: dict[str, int] = defaultdict(int)
    examples = []
    for record in tf.data.TFRecordDataset(record_files(folder), compression_type="GZIP"):
        parsed = tf.io.parse_single_example(record, spec)
        pair_id = parsed[pp.ID_KEY].numpy().decode("utf-8")
        name = set_name(pair_id)
        if limit_per_set is not None and counts[name] >= limit_per_set:
            continue
        counts[name] += 1
        examples.append(
            EvalExample(pair_id, name, parsed[pp.IMAGE_KEY].numpy(), parsed[pp.MASK_KEY].numpy())
        )
    return examples


def _pixels(image: bytes, height: int, width: int):
    """Pixels for ``predict_float`` (latency only): decode, antialiased bilinear resize."""
    from components import preprocessing as pp

    return pp.resize_image(pp.decode_rgb(image), height, width)


def _latencies(calls: dict[str, tuple], image: bytes | None, runs: int) -> dict[str, dict]:
    import tensorflow as tf

    timed_calls = {}
    for name, (fn, (height, width)) in calls.items():
        photo = image
        if photo is None:
            buffer = io.BytesIO()
            synthetic_photo(width, height).save(buffer, "PNG")
            photo = buffer.getvalue()
        pixels = tf.expand_dims(_pixels(photo, height, width), 0)
        timed_calls[name] = lambda fn=fn, pixels=pixels: fn(pixels=pixels)
    times = interleaved_seconds(timed_calls, runs)
    return {name: summary_ms(values) for name, values in times.items()}


def edge_split(truth: np.ndarray, prediction: np.ndarray, pixel: float) -> tuple[float, float]:
    """1 - IoU in two parts: errors within EDGE_BAND model pixels (``pixel`` photo pixels
    each) of the true outline, and the rest.

    Edge errors call for finer outlines (input size, refinement); errors elsewhere are
    what the model takes for a person or misses, which no resolution fixes.
    """
    from scipy import ndimage

    wrong = truth ^ prediction
    union = int((truth | prediction).sum())
    if union == 0:
        return 0.0, 0.0
    # Distance of each pixel to the nearest pixel on the other side of the outline.
    distance = np.where(
        truth, ndimage.distance_transform_edt(truth), ndimage.distance_transform_edt(~truth)
    )
    at_edge = int((wrong & (distance <= EDGE_BAND * pixel)).sum())
    return at_edge / union, (int(wrong.sum()) - at_edge) / union


def closeup_box(truth: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of a 3:4 head-and-shoulders window on the largest
    person in ``truth``, centred on the head, the frame cutting through the shoulders:
    how portraits and selfies frame people, which the eval photos (mostly whole bodies)
    do not show. None if nobody is seen whole (a person the frame cuts off has no known
    height) or the window would be too small."""
    from scipy import ndimage

    labels, count = ndimage.label(truth)
    if count == 0:
        return None
    sizes = ndimage.sum(truth, labels, range(1, count + 1))
    person = labels == 1 + int(np.argmax(sizes))
    rows = np.flatnonzero(person.any(axis=1))
    if rows[-1] >= truth.shape[0] - 1:
        return None
    height = rows[-1] - rows[0] + 1
    top = max(0, int(rows[0] - 0.1 * height))
    bottom = int(rows[0] + CLOSEUP_DEPTH * height)
    if bottom - top < CLOSEUP_MIN_PIXELS:
        return None
    head = np.flatnonzero(person[rows[0] : rows[0] + max(1, height // 8)].any(axis=0))
    width = min(int(0.75 * (bottom - top)), truth.shape[1])
    left = int(np.clip((head[0] + head[-1]) / 2 - width / 2, 0, truth.shape[1] - width))
    return top, bottom, left, left + width


def closeup(photo: Image.Image, truth: np.ndarray) -> tuple[bytes, np.ndarray] | None:
    """The close-up of an upright photo and its true mask (``closeup_box``): the window
    as a lossless PNG, and the mask inside it; None where ``closeup_box`` finds none."""
    box = closeup_box(truth)
    if box is None:
        return None
    top, bottom, left, right = box
    out = io.BytesIO()
    photo.crop((left, top, right, bottom)).save(out, "PNG")
    return out.getvalue(), truth[top:bottom, left:right]


def _closeup(example: EvalExample) -> tuple[bytes, np.ndarray] | None:
    from components import preprocessing as pp

    truth = pp.decode_mask(example.mask).numpy()[..., 0] > 0.5
    return closeup(Image.open(io.BytesIO(example.image)).convert("RGB"), truth)


def _score_closeups(serve, batch: list[EvalExample], by_set: dict[str, SetScores]) -> None:
    import tensorflow as tf

    from components import preprocessing as pp
    from components.losses import iou
    from serving import defaults

    cut = [(example, closeup) for example in batch if (closeup := _closeup(example))]
    if not cut:
        return
    images = tf.constant([png for _, (png, _) in cut])
    masks = serve(**{defaults.INPUT_IMAGES: images})[defaults.OUTPUT_MASK].numpy()
    for (example, (_, truth)), mask in zip(cut, masks, strict=True):
        predicted = pp.upsample_mask(mask, *truth.shape).numpy() > 0.5
        by_set[example.set_name].iou_closeup.append(iou(truth, predicted))


def _score_image(example: EvalExample, quantized: np.ndarray, scores: SetScores) -> None:
    """``quantized``: the uint8 mask serving_default returned, which the IoU gate upsamples."""
    from components import preprocessing as pp
    from components.losses import iou, iou_counts

    height, width = quantized.shape
    mask = pp.decode_mask(example.mask)
    truth_full = mask.numpy()[..., 0] > 0.5
    truth_model = pp.resize_mask(mask, height, width).numpy()[..., 0] > 0.5
    scores.iou_model.append(iou(truth_model, quantized > 127))
    pred_full = pp.upsample_mask(quantized, *truth_full.shape).numpy() > 0.5
    inter, union = iou_counts(truth_full, pred_full)
    scores.intersection += inter
    scores.union += union
    scores.iou_full.append(1.0 if union == 0 else inter / union)
    # Photo pixels per model pixel along the long sides (a landscape photo runs turned).
    at_edge, elsewhere = edge_split(
        truth_full, pred_full, max(truth_full.shape) / max(height, width)
    )
    scores.lost_at_edge.append(at_edge)
    scores.lost_elsewhere.append(elsewhere)
    photo = Image.open(io.BytesIO(example.image)).convert("RGB")
    started = time.perf_counter()
    refined = refine.guided_upsample(quantized, photo)
    scores.refine_ms.append((time.perf_counter() - started) * 1000.0)
    scores.iou_refined.append(iou(truth_full, np.asarray(refined) > 127))
    # Mean |alpha - truth| of a cut-out's alpha as composited, and of the mask as alpha.
    alpha = compositing.alpha_from_mask(refined, photo.size, edge_contrast=EDGE_CONTRAST)
    scores.alpha_error.append(float(np.abs(np.asarray(alpha) / 255.0 - truth_full).mean()))
    soft = np.asarray(refined) / 255.0
    scores.alpha_error_mask.append(float(np.abs(soft - truth_full).mean()))
    scores.rows.append(
        Row(
            example.pair_id,
            scores.iou_full[-1],
            scores.iou_model[-1],
            example.image,
            example.mask,
            quantized,
        )
    )


def _score(serve, examples: list[EvalExample]) -> dict[str, SetScores]:
    import tensorflow as tf

    from serving import defaults

    by_set: dict[str, SetScores] = defaultdict(SetScores)
    for start in range(0, len(examples), BATCH):
        batch = examples[start : start + BATCH]
        images = tf.constant([e.image for e in batch])
        masks = serve(**{defaults.INPUT_IMAGES: images})[defaults.OUTPUT_MASK].numpy()
        for example, mask in zip(batch, masks, strict=True):
            _score_image(example, mask, by_set[example.set_name])
        _score_closeups(serve, batch, by_set)
    return dict(sorted(by_set.items()))


def run(
    config: PipelineConfig,
    variants: dict[str, Path],
    runs: int,
    limit_per_set: int | None,
    worst: int,
    out_dir: Path,
) -> dict:
    import tensorflow as tf

    from serving import defaults

    if not variants:
        return {
            "skipped": "no SavedModel to measure: none shipped (models/bgremover/1) or pushed; "
            "pass --variants name=dir,..."
        }
    split = newest_split(config, "eval")
    notes = []
    examples: list[EvalExample] = []
    if split is None:
        root = display_path(Path(config.pipeline_root))
        notes.append(
            f"IoU skipped: no ImageExampleGen eval split under {root} (run the pipeline first, "
            "e.g. make pipeline CONFIG=configs/real.toml); latency measured on a synthetic photo"
        )
        log(SECTION, notes[-1])
    else:
        examples = read_eval(split, limit_per_set)
        log(SECTION, f"{len(examples)} eval examples from {display_path(split)}")
    results: dict[str, dict] = {}
    sheets: dict[str, str] = {}
    loaded = {name: tf.saved_model.load(str(path)) for name, path in variants.items()}
    calls = {
        name: (model.signatures[defaults.SIGNATURE_FLOAT], input_size(model))
        for name, model in loaded.items()
    }
    latencies = _latencies(calls, examples[0].image if examples else None, runs)
    for index, (name, (_, size)) in enumerate(calls.items()):
        latency = latencies[name]
        log(SECTION, f"{name}: {size[1]}x{size[0]}, median {latency['median']} ms per image")
        entry = {
            "path": display_path(variants[name]),
            "input": f"{size[1]}x{size[0]}",
            "latency_ms": latency,
        }
        if examples:
            scored = _score(loaded[name].signatures[defaults.SIGNATURE_BYTES], examples)
            entry["sets"] = {set_: scores.summary() for set_, scores in scored.items()}
            log(SECTION, f"{name}: {entry['sets']}")
            if index == 0:
                for set_, scores in scored.items():
                    rows = sorted(scores.rows, key=lambda r: r.iou_full)[:worst]
                    title = f"{name} ({entry['input']}): the {len(rows)} worst of {set_} eval"
                    sheet = write_sheet(rows, title, out_dir / f"worst_{set_}.png")
                    sheets[set_] = display_path(sheet)
        results[name] = entry
    return {
        "eval_split": display_path(split) if split else None,
        "threshold": 0.5,
        "variants": results,
        "contact_sheets": {"variant": next(iter(variants)), **sheets} if sheets else {},
        "notes": notes
        + [
            "latency: predict_float on one image, batch 1, in-process, after 3 warm-up calls; "
            "the variants' calls interleaved",
            "IoU of the uint8 masks serving_default returns, each model as it serves "
            "(exports from before components/export.py turned landscape photos squeeze them); "
            "mean_iou_model_res: per-image IoU at model resolution (truth area-downsampled, "
            "both > 0.5); mean_iou_full_res: the uint8 mask upsampled bilinearly to the stored "
            "photo, as components/iou_evaluator.py scores; "
            "foreground_iou_full_res: sum of intersections / sum of unions (the gate's figure)",
            "mean_iou_full_res_refined: the same mask upsampled by the client's guided filter "
            "(serving/refine.py) instead of bilinearly; refine_ms_median: its cost per photo",
            f"iou_lost_at_edge + iou_lost_elsewhere = 1 - mean_iou_full_res: the wrong pixels "
            f"within {EDGE_BAND:g} model pixel of the true outline, and the rest, per image "
            "over its union",
            f"alpha_error: mean |alpha - truth| per pixel of a cut-out's alpha (the refined "
            f"mask stretched {EDGE_CONTRAST:g}x about 0.5, serving/compositing.py); "
            "alpha_error_model_mask: the same with the refined mask itself as alpha",
            f"mean_iou_closeup: per-image IoU at full resolution on head-and-shoulders "
            f"windows cut from the eval photos whose largest person the frame does not cut "
            f"off (3:4, centred on the head, from a tenth of the person's height above the "
            f"head to {CLOSEUP_DEPTH:g} of it, at least {CLOSEUP_MIN_PIXELS} pixels tall; "
            "closeups: how many), as portraits and selfies frame people",
        ],
    }
