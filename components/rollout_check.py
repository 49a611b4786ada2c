"""After a push, waits until the serving side really serves the new version.

The Pusher only writes files; this asks the server (TF Serving or the local
server, over gRPC) until the pushed version is AVAILABLE, then sends a smoke
Predict pinned to that version and compares its mask with the pushed
SavedModel's own answer, run here: a server that serves something else under
that version number (a stale copy, a broken accelerator) fails the run.
"""

import time

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image
from tfx import v1 as tfx

from components.errors import PipelineStopped
from serving import defaults, images
from serving.client import BackgroundRemover, BackgroundRemoverError
from serving.refine import bilinear_upsample

PushedModel = tfx.types.standard_artifacts.PushedModel

# Served and local masks may differ by a few levels (another build, a GPU), not more.
MASK_LEVELS_APART = 16
MAX_PIXELS_APART = 0.01


class RolloutFailed(PipelineStopped):
    pass


def smoke_image(width: int = 160, height: int = 240) -> Image.Image:
    """A portrait-shaped gradient with a bright figure: deterministic, needs no files."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 96)], axis=-1)
    figure = ((x - width / 2) / (width / 5)) ** 2 + ((y - height / 2) / (height / 3)) ** 2 < 1
    pixels[figure] = (230, 200, 180)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def wait_until_available(
    remover: BackgroundRemover, version: int, timeout_s: float, poll_s: float = 1.0
) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            states = {s.version: s for s in remover.status()}
        except BackgroundRemoverError as e:
            last = str(e)
        else:
            status = states.get(version)
            if status is not None and status.state == "AVAILABLE":
                return
            if status is not None and status.state == "END" and status.error_code != "OK":
                raise RolloutFailed(
                    f"version {version} of {remover.model} failed to load on {remover.address}: "
                    f"{status.error_message or status.error_code}"
                )
            last = f"version {version} is {status.state if status else 'not known yet'}"
        time.sleep(poll_s)
    raise RolloutFailed(
        f"version {version} of {remover.model} was not AVAILABLE on {remover.address} "
        f"within {timeout_s:g}s ({last})"
    )


def expected_mask(saved_model_dir: str, photo: Image.Image) -> Image.Image:
    """The pushed model's mask of ``photo``, run in-process as the client would ask for it."""
    model = tf.saved_model.load(saved_model_dir)
    encoded = images.encode_for_request(photo, max(photo.size))
    outputs = model.signatures[defaults.SIGNATURE_BYTES](
        **{defaults.INPUT_IMAGES: tf.constant([encoded])}
    )
    mask = outputs[defaults.OUTPUT_MASK].numpy()[0].astype(np.uint8)
    return bilinear_upsample(mask, photo)


def check_rollout(
    address: str, model: str, version: int, timeout_s: float, pushed_dir: str | None = None
) -> None:
    """Fails unless ``version`` is AVAILABLE and answers a mask (the pushed model's, if given)."""
    with BackgroundRemover(address, model, timeout=min(30.0, timeout_s)) as remover:
        wait_until_available(remover, version, timeout_s)
    photo = smoke_image()
    with BackgroundRemover(
        address, model, version=version, timeout=30.0, refine=False, max_side=max(photo.size)
    ) as pinned:
        try:
            mask = pinned.mask(photo)
        except BackgroundRemoverError as e:
            raise RolloutFailed(f"smoke Predict on version {version} failed: {e}") from e
    if mask.size != photo.size or mask.mode != "L":
        raise RolloutFailed(
            f"smoke Predict on version {version} answered a {mask.mode} mask of {mask.size}, "
            f"expected L of {photo.size}"
        )
    if pushed_dir is not None:
        served = np.asarray(mask, dtype=np.int16)
        local = np.asarray(expected_mask(pushed_dir, photo), dtype=np.int16)
        apart = float(np.mean(np.abs(served - local) > MASK_LEVELS_APART))
        if apart > MAX_PIXELS_APART:
            raise RolloutFailed(
                f"version {version} on {address} is not the pushed model: its mask differs "
                f"from {pushed_dir}'s on {apart:.1%} of the pixels"
            )
    logging.info("Rollout check: version %d of %s serves on %s", version, model, address)


@tfx.dsl.components.component
def RolloutCheck(  # noqa: N802 - TFX names components like classes
    pushed_model: tfx.dsl.components.InputArtifact[PushedModel],
    server: tfx.dsl.components.Parameter[str],
    model_name: tfx.dsl.components.Parameter[str],
    timeout_s: tfx.dsl.components.Parameter[float] = 120.0,
) -> None:
    if not pushed_model.get_int_custom_property("pushed"):
        logging.info("Rollout check: nothing was pushed, the served model stays as it is")
        return
    version = int(pushed_model.get_string_custom_property("pushed_version"))
    check_rollout(server, model_name, version, timeout_s, pushed_dir=pushed_model.uri)
