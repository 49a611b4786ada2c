"""TFX Trainer module file: trains the UNet and exports the serving SavedModel.

Settings arrive as the pipeline's JSON config in ``custom_config["config"]``,
so the Trainer reads the same configuration as every other component.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time

import keras
import tensorflow as tf
from absl import logging
from tfx import v1 as tfx

from components import calibration, dataset, inference, losses, pairs, seen_photos, unfolding
from components.architecture import ARCHITECTURE_KEYS
from components.errors import PipelineStopped
from components.export import export_saved_model
from components.unet import build_configured_unet, with_input_size

KERAS_SUBDIR = "keras"
KERAS_FILE = "model.keras"
_STATISTICS_BATCHES = 32


def _settings(fn_args: tfx.components.FnArgs) -> dict:
    return json.loads(fn_args.custom_config["config"])


def keras_path(serving_model_dir: str) -> str:
    """The Keras copy beside Format-Serving, which warm starts load."""
    return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), KERAS_SUBDIR, KERAS_FILE)


def _build_or_start_from(
    cfg: dict, base_model: str | None, photos: tf.data.Dataset
) -> tuple[keras.Model, str]:
    """The configured model, and where its weights come from: the last blessed model
    under warm_start, else init_model, else ImageNet's ("" for no trained weights)."""
    warm = bool(cfg["warm_start"] and base_model)
    initial = "" if warm else cfg["init_model"]
    # ImageNet's kernels also set the scale of init_model's (components/unfolding.py).
    model = build_configured_unet(cfg, pretrained_weights=not warm)
    if warm:
        source = keras_path(base_model)
        base = keras.models.load_model(source, compile=False)
        if [w.shape for w in base.weights] != [w.shape for w in model.weights]:
            raise ValueError(
                f"warm_start: the last blessed model ({source}) has another architecture "
                f"({base.name}) than the configured one ({model.name}); set warm_start = false"
            )
        model.set_weights(base.get_weights())
        logging.info("Warm start from %s", source)
        return model, source
    if initial:
        unfolding.load_exported(model, initial, photos)
        served = inference.exported(initial) or "not recorded"
        logging.info(
            "Starting from the exported model %s (served: %s; this run settles its own)",
            initial,
            served,
        )
    return model, initial


def _backup_dir(cfg: dict, train_files: list[str]) -> str:
    """Checkpoints survive an interrupted run; a changed model or data starts afresh.

    The data is the ingestion's output (a new Examples artifact whenever the photos,
    the split or the decoding changed), not just the folders' names.  The epoch count
    is not part of the key: a run resumed with another count trains on to the new total.
    """
    keys = (
        *ARCHITECTURE_KEYS,
        "data_dirs",
        "data_repeats",
        "batch_size",
        "learning_rate",
        "synthetic_count",
        "seed",
        "warm_start",
        "init_model",
        "foreground_weight",
        "dice_weight",
        "lovasz_weight",
        "augment",
        "train_turned",
        "validation_fraction",
        "lr_schedule",
    )
    content = json.dumps([{k: cfg[k] for k in keys}, train_files], sort_keys=True).encode()
    if cfg["init_model"]:  # a model replaced at the same path starts afresh too
        content += unfolding.variables_index(cfg["init_model"])
    digest = hashlib.sha256(content).hexdigest()[:12]
    return os.path.join(cfg["pipeline_root"], "train_backup", digest)


class _BestRecord(keras.callbacks.Callback):
    """Writes the best epoch's score beside its weights, for a resumed run."""

    FILE = "best.json"

    def __init__(self, checkpoint: keras.callbacks.ModelCheckpoint, folder: str) -> None:
        super().__init__()
        self._checkpoint = checkpoint
        self._folder = folder

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if math.isfinite(self._checkpoint.best) and os.path.exists(self._checkpoint.filepath):
            self.write(self._folder, float(self._checkpoint.best))

    @classmethod
    def write(cls, folder: str, iou: float) -> None:
        with open(os.path.join(folder, cls.FILE), "w") as f:
            json.dump({"val_foreground_iou": iou}, f)

    @classmethod
    def read(cls, folder: str) -> float | None:
        try:
            with open(os.path.join(folder, cls.FILE)) as f:
                return float(json.load(f)["val_foreground_iou"])
        except (OSError, ValueError, KeyError):
            return None


class _BothOrientations(keras.Model):
    """One set of weights trained on batches of either orientation.

    Keras's bilinear upsampling needs a static input size, so the batch goes through
    the model at its size or the same layers at the transposed size.
    """

    def __init__(self, model: keras.Model):
        super().__init__(name=model.name)
        self.height, self.width = model.input_shape[1], model.input_shape[2]
        self.upright = model
        self.turned = with_input_size(model, self.width, self.height)
        self.built = True  # both networks are; BackupAndRestore checks before fit

    def call(self, images, training=None):
        if images.shape[1] is not None:  # known while tracing: no branch needed
            network = self.upright if images.shape[1] == self.height else self.turned
            return network(images, training=training)
        # Reshapes, not tf.ensure_shape, which failed in the branch not taken inside
        # Keras's compiled train step.
        upright = tf.reshape(images, [-1, self.height, self.width, 3])
        turned = tf.reshape(images, [-1, self.width, self.height, 3])
        return tf.cond(
            tf.shape(images)[1] == self.height,
            lambda: self.upright(upright, training=training),
            lambda: self.turned(turned, training=training),
        )


class _TimeBudget(keras.callbacks.Callback):
    """Ends training after the epoch that crosses the budget; the best epoch
    so far is still the one exported."""

    def __init__(self, minutes: float):
        super().__init__()
        self._seconds = minutes * 60.0
        self._start = time.monotonic()

    def used(self) -> float:
        """The share of the budget spent so far (0 without a budget)."""
        return (time.monotonic() - self._start) / self._seconds if self._seconds else 0.0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.used() >= 1.0:
            logging.info("Time budget of %.0f s used after epoch %d", self._seconds, epoch + 1)
            self.model.stop_training = True


class _CosineDecay(keras.callbacks.Callback):
    """Lowers the learning rate along half a cosine from its start to zero over
    the time budget (or the epochs, whichever ends first).

    Unlike a plateau schedule it does not react to the noise of a small
    validation split, and a short fine-tune still ends at a low rate.
    """

    def __init__(self, learning_rate: float, budget: _TimeBudget, epochs: int):
        super().__init__()
        self._start_rate = learning_rate
        self._budget = budget
        self._epochs = epochs
        self._epoch = 0

    def progress(self) -> float:
        return min(1.0, max(self._epoch / self._epochs, self._budget.used()))

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        rate = 0.5 * self._start_rate * (1.0 + math.cos(math.pi * self.progress()))
        self.model.optimizer.learning_rate = rate

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())


def _schedule(cfg: dict, budget: _TimeBudget) -> keras.callbacks.Callback:
    if cfg["lr_schedule"] == "cosine":
        return _CosineDecay(cfg["learning_rate"], budget, cfg["epochs"])
    return keras.callbacks.ReduceLROnPlateau(
        monitor="val_foreground_iou", mode="max", factor=0.5, patience=3, min_lr=1e-5
    )


def _serving_settings(
    cfg: dict, network: keras.Model, photos: tf.data.Dataset
) -> tuple[inference.ServingSettings, dict]:
    """How the export serves the model, with the validation scores behind the choice.

    The threshold is chosen on the validation slice as served: ``photos`` has landscape
    photos turned whatever ``train_turned`` says (``network`` takes both orientations),
    and they are mirror-averaged if the export will be.
    """
    settings = inference.ServingSettings(flip_average=cfg["flip_average"])
    if not cfg["calibrate_threshold"]:
        return settings, {}
    if not cfg["validation_fraction"]:
        logging.warning("validation_fraction is 0: the threshold is chosen on training photos")
    threshold, means = calibration.best_threshold(
        lambda images: inference.probabilities(network, images, settings.flip_average), photos
    )
    logging.info(
        "Decision threshold %.2f: validation mean per-image IoU %.4f (%.4f at 0.5)",
        threshold,
        means[threshold],
        means[0.5],
    )
    scores = {f"{t:.2f}": round(m, 5) for t, m in means.items()}
    return dataclasses.replace(settings, decision_threshold=threshold), {
        "validation_mean_iou": scores
    }


def _trained_on(cfg: dict, fn_args: tfx.components.FnArgs, source: str) -> list[str]:
    """This run's train photos, and those of the model it warm-started from."""
    ids = seen_photos.example_ids(fn_args.train_files)
    keys = set(seen_photos.photo_keys(ids, cfg["data_dirs"]).values())
    if source.endswith(KERAS_FILE):  # a warm start: the blessed model's Keras file
        keys |= seen_photos.read(os.path.dirname(source)) or set()
    return sorted(keys)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    cfg = _settings(fn_args)
    keras.utils.set_random_seed(cfg["seed"])
    height, width, batch = cfg["image_height"], cfg["image_width"], cfg["batch_size"]
    percent = round(100 * cfg["validation_fraction"])
    prefixes = pairs.id_prefixes(cfg["data_dirs"])
    repeats = dict(zip(prefixes, cfg["data_repeats"], strict=True)) if cfg["data_repeats"] else {}
    turned = cfg["train_turned"]
    train = dataset.train_dataset(
        fn_args.train_files, height, width, batch, cfg["augment"], percent, repeats, turned
    )
    evaluation = dataset.eval_dataset(fn_args.train_files, height, width, batch, percent, turned)
    if percent and not any(True for _ in evaluation.take(1)):  # say so before, not after
        raise PipelineStopped(
            f"no train photo falls in the validation slice (validation_fraction "
            f"{cfg['validation_fraction']}), which picks the best epoch and the threshold: "
            "add photos, raise validation_fraction, or set it to 0 to keep none back"
        )
    if cfg["epochs"] and not dataset.leaves_train_photos(fn_args.train_files, percent):
        raise PipelineStopped(
            f"every train photo falls in the validation slice (validation_fraction "
            f"{cfg['validation_fraction']}): add photos or lower validation_fraction"
        )

    weight = cfg["foreground_weight"]
    if weight <= 0:
        fraction = dataset.foreground_fraction(train)  # also fills the decode cache
        weight = losses.foreground_weight_from_fraction(fraction)
        logging.info("Foreground fraction %.3f -> foreground weight %.2f", fraction, weight)

    # BatchNorm statistics for init_model, from augmented training batches as training
    # normalises them, so that the first epochs do not shift them (turned batches are
    # squeezed back to the fixed size for this measurement).
    photos = train.take(_STATISTICS_BATCHES).map(
        lambda images, _: tf.image.resize(images, [height, width])
    )
    model, source = _build_or_start_from(cfg, fn_args.base_model, photos)
    # Both orientations through one set of weights, as served (before compiling: a
    # compiled model's clone would need the loss registered); the fixed-size model is
    # what is exported.
    as_served = _BothOrientations(model) if height != width else model
    trained = as_served if turned else model
    candidates = calibration.CANDIDATES if cfg["calibrate_threshold"] else ()
    trained.compile(
        optimizer=keras.optimizers.Adam(cfg["learning_rate"]),
        loss=losses.make_loss(weight, cfg["dice_weight"], cfg["lovasz_weight"]),
        # IoU only: pixel accuracy flatters blank masks, and Keras diluted it on these
        # datasets of unknown length (a perfect validation mask logged 0.49).  A model
        # served at a calibrated threshold is judged (and its best epoch kept) at its
        # best cut.
        metrics=[losses.ForegroundIoU(cfg["threshold"], thresholds=candidates)],
    )
    backup = _backup_dir(cfg, list(fn_args.train_files))
    # The best epoch so far lives beside the backup (which Keras deletes when fit ends),
    # so that a resumed run still exports it if no later epoch beats it.
    best_dir = backup + "-best"
    best = os.path.join(best_dir, "best.weights.h5")
    os.makedirs(best_dir, exist_ok=True)
    best_iou = _BestRecord.read(best_dir) if os.path.exists(best) else None
    if best_iou is not None:
        logging.info("Resuming: the best epoch so far scored val foreground IoU %.4f", best_iou)
    elif source:
        # Keep the starting weights unless an epoch beats them.
        best_iou = trained.evaluate(evaluation, return_dict=True, verbose=0)["foreground_iou"]
        trained.save_weights(best)
        _BestRecord.write(best_dir, best_iou)
        logging.info("Starting weights: val foreground IoU %.4f", best_iou)
    budget = _TimeBudget(cfg["max_train_minutes"])
    checkpoint = keras.callbacks.ModelCheckpoint(
        best,
        monitor="val_foreground_iou",
        mode="max",
        save_best_only=True,
        save_weights_only=True,
        initial_value_threshold=best_iou,
    )
    callbacks = [
        keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch"),
        keras.callbacks.BackupAndRestore(backup),
        _schedule(cfg, budget),
        checkpoint,
        _BestRecord(checkpoint, best_dir),
        budget,
    ]
    steps = cfg["steps_per_epoch"] or None
    trained.fit(
        train.repeat() if steps else train,
        epochs=cfg["epochs"],
        steps_per_epoch=steps,
        validation_data=evaluation,
        callbacks=callbacks,
        verbose=2,
    )
    if os.path.exists(best):
        trained.load_weights(best)

    keras_file = keras_path(fn_args.serving_model_dir)
    os.makedirs(os.path.dirname(keras_file), exist_ok=True)
    # The validation slice as served, landscape photos turned, for the threshold.
    photos_as_served = (
        evaluation
        if turned
        else dataset.eval_dataset(fn_args.train_files, height, width, batch, percent, True)
    )
    settings, details = _serving_settings(cfg, as_served, photos_as_served)
    inference.save(os.path.dirname(keras_file), settings, **details)
    seen_photos.write(os.path.dirname(keras_file), _trained_on(cfg, fn_args, source))
    export_saved_model(model, fn_args.serving_model_dir, settings)
    model.save(keras_file)
    shutil.rmtree(best_dir, ignore_errors=True)  # done: a rerun starts afresh
    logging.info(
        "Exported %s (%d parameters) to %s",
        model.name,
        model.count_params(),
        fn_args.serving_model_dir,
    )
