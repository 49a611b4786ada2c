"""How a trained network's masks are served: optionally averaged with the mirror
image's, then recentred on the decision threshold (components/calibration.py).

Both choices are settled when training ends and saved beside the Keras model, so a
re-export (``python -m components.export``) serves what the Trainer measured, and in
the SavedModel's ``assets.extra`` (which TF Serving ignores), so an export says how it
serves.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import tensorflow as tf

from components.calibration import recentre

SETTINGS_FILE = "serving_settings.json"
EXPORT_SUBDIR = "assets.extra"


@dataclasses.dataclass(frozen=True)
class ServingSettings:
    # The probability that served masks put at 0.5.
    decision_threshold: float = 0.5
    # Average with the mask of the mirrored photo: a second opinion on the same
    # weights for about 1.6x the time (one batch of two on 2 cores).
    flip_average: bool = False


def probabilities(
    network: Callable[..., tf.Tensor], pixels: tf.Tensor, flip_average: bool
) -> tf.Tensor:
    """The network's (N, H, W, 1) probabilities, mirror-averaged if asked."""
    if not flip_average:
        return network(pixels, training=False)
    both = network(tf.concat([pixels, tf.reverse(pixels, [2])], axis=0), training=False)
    plain, mirrored = tf.split(both, 2, axis=0)
    return (plain + tf.reverse(mirrored, [2])) / 2.0


def served(
    network: Callable[..., tf.Tensor], pixels: tf.Tensor, settings: ServingSettings
) -> tf.Tensor:
    return recentre(
        probabilities(network, pixels, settings.flip_average), settings.decision_threshold
    )


def save(folder: str, settings: ServingSettings, **details) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, SETTINGS_FILE), "w") as f:
        json.dump({**dataclasses.asdict(settings), **details}, f, indent=2)


def _saved(folder: str) -> ServingSettings | None:
    path = os.path.join(folder, SETTINGS_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    fields = dataclasses.fields(ServingSettings)
    return ServingSettings(**{f.name: saved.get(f.name, f.default) for f in fields})


def load(folder: str) -> ServingSettings:
    """The settings saved in ``folder``; the defaults for models trained before them."""
    return _saved(folder) or ServingSettings()


def exported(export_dir: str) -> ServingSettings | None:
    """How a SavedModel this project exported serves; None if the export predates the
    record."""
    return _saved(os.path.join(export_dir, EXPORT_SUBDIR))
