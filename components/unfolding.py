"""Training weights from an exported SavedModel, whose BatchNorms are folded.

Exports carry no BatchNorm statistics (components/batchnorm_folding.py), so a
model that exists only as a SavedModel, such as the shipped ``models/bgremover/1``,
cannot be fine-tuned as it is.  Each folded convolution gets back a BatchNorm:
the kernel returns to the scale of the kernel the model was built with, and the
BatchNorm undoes that scale and adds the bias at inference, exactly, with moving
statistics measured on training photos, so that training-mode batches are
normalised about as before the export.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from components.batchnorm_folding import fold_batch_norms, foldable_pairs, output_columns

# A layer name and its optional counter: Keras names unnamed layers conv2d, conv2d_1, ...
_LAYER_NAME = re.compile(r"^(.*?)(?:_(\d+))?$")


def _counter_free(paths: list[str]) -> dict[str, str]:
    """Variable path -> the same path with each layer counter replaced by the layer's
    rank among its like: Keras counts layers per process, so the second unnamed
    conv2d may be conv2d_1 in one process and conv2d_9 in another."""
    numbered = defaultdict(list)
    for layer in {path.rsplit("/", 1)[0] for path in paths}:
        prefix, counter = _LAYER_NAME.match(layer).groups()
        numbered[prefix].append((int(counter or 0), layer))
    ranked = {
        layer: f"{prefix}#{rank}"
        for prefix, layers in numbered.items()
        for rank, (_, layer) in enumerate(sorted(layers))
    }
    return {path: f"{ranked[path.rsplit('/', 1)[0]]}/{path.rsplit('/', 1)[1]}" for path in paths}


def _variables_prefix(export_dir: str) -> str:
    prefix = os.path.join(export_dir, "variables", "variables")
    if not tf.io.gfile.exists(prefix + ".index"):
        raise FileNotFoundError(f"{export_dir} is not a SavedModel directory (no variables)")
    return prefix


def variables_index(export_dir: str) -> bytes:
    """The SavedModel's variable index: it changes whenever the weights do."""
    with tf.io.gfile.GFile(_variables_prefix(export_dir) + ".index", "rb") as f:
        return f.read()


def _exported_values(export_dir: str) -> dict[str, np.ndarray]:
    """The SavedModel's variables by counter-free path, read from its checkpoint."""
    reader = tf.train.load_checkpoint(_variables_prefix(export_dir))
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    keys = {a.full_name: a.checkpoint_key for node in graph.nodes for a in node.attributes}
    names = _counter_free(list(keys))
    return {names[path]: reader.get_tensor(key) for path, key in keys.items()}


def _channel_statistics(outputs: keras.Model, photos: tf.data.Dataset) -> list[tuple]:
    """Per-channel mean and variance of each output over every pixel of photos."""
    totals: list[list] = []
    for batch in photos:
        values = keras.tree.flatten(outputs(batch, training=False))
        totals = totals or [[0, 0.0, 0.0] for _ in values]
        for total, value in zip(totals, values, strict=True):
            pixels = np.asarray(value, np.float64).reshape(-1, value.shape[-1])
            total[0] += len(pixels)
            total[1] = total[1] + pixels.sum(0)
            total[2] = total[2] + np.square(pixels).sum(0)
    if not totals:
        raise ValueError("no photos to measure BatchNorm statistics on")
    return [(s / n, np.maximum(q / n - np.square(s / n), 0.0)) for n, s, q in totals]


def _kernel_scale(conv: keras.layers.Layer, folded_kernel: np.ndarray) -> np.ndarray:
    """Per output channel, what brings the folded kernel back to the norm of the
    kernel the model was built with (ImageNet's or its initialiser's).

    Folding scales a kernel by gamma / sqrt(variance), about a fifth in the shipped
    encoder; Adam's steps do not shrink with it, so fine-tuning the folded kernels
    moves them several times faster than training ever did.
    """
    built_kernel = conv.get_weights()[-1 - int(conv.use_bias)]
    built = np.linalg.norm(output_columns(built_kernel, conv), axis=0)
    folded = np.linalg.norm(output_columns(folded_kernel, conv), axis=0)
    usable = (built > 1e-12) & (folded > 1e-12)
    return np.where(usable, built / np.where(usable, folded, 1.0), 1.0).astype(np.float32)


_SETTINGS_HINT = (
    "; set the encoder, image size and UNet settings the export was trained with "
    "(for the shipped models/bgremover/1: CONFIG=configs/finetune-own-photos.toml)"
)


def _matched(model: keras.Model, export_dir: str) -> tuple[dict, keras.Model, dict, dict]:
    """``model``'s foldable pairs, ``model`` folded, the export's values and the folded
    model's names for them; raises if the export is not ``model``'s architecture."""
    pairs = foldable_pairs(model)
    if not all(norm.scale and norm.center for norm in pairs.values()):
        raise ValueError(f"{model.name}: unfolding needs BatchNorms with scale and center")
    folded = fold_batch_norms(model)  # shares every layer but the folded convolutions
    values = _exported_values(export_dir)
    names = _counter_free([variable.path for variable in folded.weights])
    if sorted(values) != sorted(names.values()):
        unfolded = len(values) == len(model.weights)
        raise ValueError(
            f"{export_dir} holds {len(values)} variables, the configured {model.name} "
            f"{len(names)} once folded: "
            + ("an export whose BatchNorms were not folded" if unfolded else "another architecture")
            + _SETTINGS_HINT
        )
    for variable in folded.weights:
        value = values[names[variable.path]]
        if tuple(variable.shape) != value.shape:
            raise ValueError(
                f"{export_dir}: {variable.path} has shape {value.shape}, the configured model "
                f"{tuple(variable.shape)}: another architecture" + _SETTINGS_HINT
            )
    return pairs, folded, values, names


def check_exported(model: keras.Model, export_dir: str) -> None:
    """Raises unless ``load_exported`` can start ``model`` from ``export_dir``: the runner
    asks before ingestion, which takes minutes on real data."""
    _matched(model, export_dir)


def load_exported(model: keras.Model, export_dir: str, photos: tf.data.Dataset) -> None:
    """Sets ``model`` (unfolded, as configured) to the exported model's function.

    ``photos`` yields batches of images at the model's input size.
    """
    pairs, folded, values, names = _matched(model, export_dir)
    for variable in folded.weights:
        variable.assign(values[names[variable.path]])
    restored = {}
    for name, norm in pairs.items():
        conv = model.get_layer(name)
        *kernels, bias = folded.get_layer(name).get_weights()
        scale = _kernel_scale(conv, kernels[-1])
        kernels[-1] = (output_columns(kernels[-1], conv) * scale).reshape(kernels[-1].shape)
        conv.set_weights([*kernels, np.zeros_like(bias)] if conv.use_bias else kernels)
        restored[name] = (scale, bias)
        # Inference gives conv / scale + bias, the export's function, for any statistics:
        # gamma = sqrt(var + eps) / scale and beta = mean / scale + bias.
        norm.set_weights(
            [1.0 / scale, bias, np.zeros_like(bias), np.full_like(bias, 1.0 - norm.epsilon)]
        )
    outputs = keras.Model(model.inputs, [model.get_layer(name).output for name in pairs])
    for (name, norm), (mean, variance) in zip(
        pairs.items(), _channel_statistics(outputs, photos), strict=True
    ):
        scale, bias = restored[name]
        norm.set_weights(
            [np.sqrt(variance + norm.epsilon) / scale, mean / scale + bias, mean, variance]
        )
