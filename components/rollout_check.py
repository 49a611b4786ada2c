"""After a push, waits until the serving side really serves the new version.

The Pusher only writes files; this asks the server (TF Serving or the local
server, over gRPC) until the pushed version is AVAILABLE, then sends a smoke
Predict pinned to that version, and fails the run if either does not happen.
"""

import time

import numpy as np
from absl import logging
from PIL import Image
from tfx import v1 as tfx

from serving.client import BackgroundRemover, BackgroundRemoverError

PushedModel = tfx.types.standard_artifacts.PushedModel


class RolloutFailed(RuntimeError):
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


def check_rollout(address: str, model: str, version: int, timeout_s: float) -> None:
    with BackgroundRemover(address, model, timeout=min(30.0, timeout_s)) as remover:
        wait_until_available(remover, version, timeout_s)
    photo = smoke_image()
    with BackgroundRemover(address, model, version=version, timeout=30.0) as pinned:
        try:
            mask = pinned.mask(photo)
        except BackgroundRemoverError as e:
            raise RolloutFailed(f"smoke Predict on version {version} failed: {e}") from e
    if mask.size != photo.size or mask.mode != "L":
        raise RolloutFailed(
            f"smoke Predict on version {version} answered a {mask.mode} mask of {mask.size}, "
            f"expected L of {photo.size}"
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
    check_rollout(server, model_name, version, timeout_s)
