"""Training throughput (images/s) of the trainer's own input pipeline, model, loss and optimizer.

Records come from the pipeline's newest train split (or a synthetic one).  A
pool of them is repeated, as ``train.repeat()`` does in the trainer, and the
warm-up steps -- tracing, and the first pass that fills the decode cache -- are
excluded, so the figure is the steady state of every epoch after the first.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from benchmarks.common import display_path, log, rate, summary_ms
from benchmarks.examples import copy_records, newest_split, record_files, write_synthetic_split
from tfx_pipeline.config import PipelineConfig

SECTION = "training"
SYNTHETIC_SIZE = (480, 640)
TYPICAL_FOREGROUND = 0.25  # the loss weight does not change the speed


def _records(config: PipelineConfig, pool: int, workdir: Path) -> tuple[Path, str]:
    out = workdir / "train_pool.gz"
    split = newest_split(config, "train")
    if split is not None:
        count = copy_records(record_files(split), out, pool)
        return out, f"{count} records of {display_path(split)}"
    write_synthetic_split(out, pool, SYNTHETIC_SIZE)
    return (
        out,
        f"{pool} synthetic pairs of {SYNTHETIC_SIZE[0]}x{SYNTHETIC_SIZE[1]} (no pipeline output)",
    )


def _input_rates(files: list[str], config: PipelineConfig, warmup: int, steps: int) -> dict:
    """Images/s of the input pipeline alone: the first (decoding) pass, then from the cache."""
    from components import dataset

    batch = config.batch_size
    once = dataset.train_dataset(
        files, config.image_height, config.image_width, batch, config.augment
    )
    started = time.perf_counter()
    images = sum(int(b[0].shape[0]) for b in once)
    first_pass = rate(images, time.perf_counter() - started)
    iterator = iter(once.repeat())
    for _ in range(warmup):
        next(iterator)
    started = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return {
        "first_pass_images_per_s": first_pass,
        "cached_images_per_s": rate(steps * batch, time.perf_counter() - started),
    }


def _fit_rates(files: list[str], config: PipelineConfig, warmup: int, steps: int) -> dict:
    import keras

    from benchmarks.common import configured_unet
    from components import dataset, losses

    keras.utils.set_random_seed(config.seed)
    batch = config.batch_size
    train = dataset.train_dataset(
        files, config.image_height, config.image_width, batch, config.augment
    ).repeat()
    model = configured_unet(config)
    weight = config.foreground_weight or losses.foreground_weight_from_fraction(TYPICAL_FOREGROUND)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=losses.make_loss(weight, config.dice_weight),
        metrics=[losses.ForegroundIoU(config.threshold)],
    )
    ends: list[float] = []

    class StepTimes(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())
            if len(ends) == warmup:
                log(SECTION, f"{warmup} warm-up steps done; timing {steps} steps")

    model.fit(train, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[StepTimes()])
    measured = ends[warmup - 1 :]
    step_seconds = [b - a for a, b in zip(measured[:-1], measured[1:], strict=True)]
    return {
        "model": model.name,
        "parameters": model.count_params(),
        "images_per_s": rate(steps * batch, measured[-1] - measured[0]),
        "step_ms": summary_ms(step_seconds),
    }


def run(config: PipelineConfig, steps: int, warmup: int, pool: int, workdir: Path) -> dict:
    if steps < 2 or warmup < 1:
        raise ValueError("training needs at least 2 timed steps and 1 warm-up step")
    path, source = _records(config, pool, workdir)
    # Warm-up covers tracing and the first pass over the pool (which fills the cache).
    warmup = max(warmup, math.ceil(pool / config.batch_size) + 1)
    files = [str(path)]
    log(SECTION, f"input pipeline alone on {source}")
    pipeline = _input_rates(files, config, warmup, steps)
    log(SECTION, f"input pipeline: {pipeline}; now model.fit, {warmup} + {steps} steps")
    fit = _fit_rates(files, config, warmup, steps)
    log(SECTION, f"training: {fit['images_per_s']} images/s")
    return {
        **fit,
        "input": f"{config.image_width}x{config.image_height}",
        "encoder": config.encoder,
        "separable": config.separable,
        "filters": config.unet_filters,
        "depth": config.unet_depth,
        "batch_size": config.batch_size,
        "augment": config.augment,
        "records": source,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "input_pipeline": pipeline,
        "notes": [
            "images/s of model.fit with the trainer's dataset (components/dataset.py), UNet, "
            "loss and optimizer, after the warm-up steps (tracing, first pass filling the "
            "decode cache): the steady state of epochs after the first",
            "input_pipeline: the same dataset iterated without the model; first_pass decodes "
            "every photo, cached is what later epochs read",
        ],
    }
