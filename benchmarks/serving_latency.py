"""Serving latency and throughput: the lean client through the local gRPC server vs. in-process.

Fair comparison: the in-process path does exactly what ``BackgroundRemover.mask``
does with the gRPC hop replaced by a direct call -- load the photo, downscale and
JPEG-encode it like the client, run ``serving_default`` on those bytes, upsample
the mask to the photo's size (and for ``remove``, composite the cut-out).  The
difference is what the server and the wire add.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

from PIL import Image, ImageOps

from benchmarks.common import (
    display_path,
    log,
    rate,
    ratio,
    summary_ms,
    synthetic_photo,
    time_calls,
    timed,
)
from benchmarks.models import ModelChoice, input_size
from benchmarks.server_process import ServerProcess
from serving import compositing, defaults, images, refine

SECTION = "serving"
OVERHEAD_TARGET = 0.15
JPEG_QUALITY = 90
CLIENT_TIMEOUT_S = 120.0


def make_photo(size: tuple[int, int], ccp_dir: Path) -> tuple[bytes, str]:
    """A JPEG of ``size``: a ccp photo cropped and upscaled when present, else synthetic."""
    photos = sorted((ccp_dir / "images").glob("*.jpg")) if (ccp_dir / "images").is_dir() else []
    if photos:
        with Image.open(photos[0]) as original:
            photo = ImageOps.fit(original.convert("RGB"), size, Image.Resampling.LANCZOS)
        source = f"{display_path(photos[0])} cropped and upscaled"
    else:
        photo, source = synthetic_photo(*size), "synthetic smooth photo"
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue(), source


class InProcess:
    """The client's work with a direct ``serving_default`` call instead of gRPC."""

    def __init__(self, model_dir: Path) -> None:
        import tensorflow as tf

        self._tf = tf
        self.loaded = tf.saved_model.load(str(model_dir))
        self._fn = self.loaded.signatures[defaults.SIGNATURE_BYTES]
        # The side BackgroundRemover sends once it has seen the model's mask.
        mask_shape = self._fn.structured_outputs[defaults.OUTPUT_MASK].shape
        self.send_side = max(2 * max(mask_shape[1:]), images.MIN_SEND_SIDE)

    def prepare(self, photo_bytes: bytes) -> tuple[Image.Image, bytes]:
        photo = images.load(photo_bytes)
        return photo, images.encode_for_request(photo, self.send_side)

    def model(self, encoded: bytes):
        out = self._fn(**{defaults.INPUT_IMAGES: self._tf.constant([encoded])})
        return out[defaults.OUTPUT_MASK].numpy()[0]

    @staticmethod
    def upsample(small, photo: Image.Image) -> Image.Image:
        """The client's default: guided by the photo (serving/refine.py)."""
        return refine.guided_upsample(small, photo)

    def mask(self, photo_bytes: bytes) -> tuple[Image.Image, Image.Image]:
        photo, encoded = self.prepare(photo_bytes)
        return photo, self.upsample(self.model(encoded), photo)

    def remove(self, photo_bytes: bytes) -> Image.Image:
        photo, mask = self.mask(photo_bytes)
        return compositing.composite(photo, mask, "transparent")


def _latencies(port: int, local: InProcess, photo: bytes, runs: int) -> dict[str, list[float]]:
    """Client and in-process calls interleaved, so a change in background load hits both alike."""
    from serving.client import BackgroundRemover

    times: dict[str, list[float]] = {
        "client_mask": [],
        "inprocess_mask": [],
        "client_remove": [],
        "inprocess_remove": [],
    }
    with BackgroundRemover(f"127.0.0.1:{port}", timeout=CLIENT_TIMEOUT_S) as client:
        calls = {
            "client_mask": lambda: client.mask(photo),
            "inprocess_mask": lambda: local.mask(photo),
            "client_remove": lambda: client.remove(photo),
            "inprocess_remove": lambda: local.remove(photo),
        }
        for call in calls.values():  # connect, trace, warm caches
            call()
            call()
        for _ in range(runs):
            for name, call in calls.items():
                times[name].append(timed(call))
    return times


def _breakdown(local: InProcess, photo: bytes, runs: int) -> dict[str, dict]:
    decoded, encoded = local.prepare(photo)
    small = local.model(encoded)
    return {
        "prepare": summary_ms(time_calls(lambda: local.prepare(photo), runs)),
        "model": summary_ms(time_calls(lambda: local.model(encoded), runs)),
        "upsample": summary_ms(time_calls(lambda: local.upsample(small, decoded), runs)),
    }


def _load(port: int, clients: int, seconds: float, photo: bytes) -> dict:
    """``clients`` threads, each with its own client, calling ``mask`` for ``seconds``."""
    from serving.client import BackgroundRemover

    barrier = threading.Barrier(clients)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            with BackgroundRemover(f"127.0.0.1:{port}", timeout=CLIENT_TIMEOUT_S) as client:
                client.mask(photo)  # connected and warm before the clock starts
                barrier.wait()
                started = time.perf_counter()
                while time.perf_counter() < started + seconds:
                    latencies[index].append(timed(lambda: client.mask(photo)))
                spans.append((started, time.perf_counter()))
        except BaseException as error:  # reported by the caller
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {clients} clients failed: {errors[0]!r}")
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    done = [t for per_client in latencies for t in per_client]
    return {
        "clients": clients,
        "requests": len(done),
        "seconds": round(elapsed, 2),
        "requests_per_s": rate(len(done), elapsed),
        "latency_ms": summary_ms(done),
    }


def _throughput(
    servers: ServerProcess, photo: bytes, concurrency: list[int], seconds: float
) -> list[dict]:
    results = []
    for batching, port in servers.ports.items():
        for clients in concurrency:
            before = servers.batch_counts()[batching].get(defaults.SIGNATURE_BYTES)
            level = {"batching": batching, **_load(port, clients, seconds, photo)}
            after = servers.batch_counts()[batching].get(defaults.SIGNATURE_BYTES)
            if before and after:
                requests, runs = after[0] - before[0], after[1] - before[1]
                level["mean_batch"] = round(requests / runs, 2) if runs else None
            log(
                SECTION,
                f"batching {'on ' if batching else 'off'} clients {clients:2d}: "
                f"{level['requests_per_s']} req/s, median {level['latency_ms']['median']} ms",
            )
            results.append(level)
    return results


def _overhead(latency: dict[str, dict]) -> dict:
    """What the server and the wire add to the in-process median, relative and in ms."""
    result: dict = {"target": OVERHEAD_TARGET, "added_ms": {}}
    for kind in ("mask", "remove"):
        client, local = latency[f"client_{kind}"]["median"], latency[f"inprocess_{kind}"]["median"]
        result[kind] = round(ratio(client, local) - 1.0, 3)
        result["added_ms"][kind] = round(client - local, 2)
    result["met"] = max(result["mask"], result["remove"]) <= OVERHEAD_TARGET
    return result


def run(
    choice: ModelChoice,
    photo_size: tuple[int, int],
    ccp_dir: Path,
    runs: int,
    concurrency: list[int],
    load_seconds: float,
) -> dict:
    photo, photo_source = make_photo(photo_size, ccp_dir)
    log(SECTION, f"model {display_path(choice.path)} ({choice.source}); photo {photo_source}")
    with ServerProcess(choice.path, [False, True]) as servers:
        local = InProcess(choice.path)  # while the server process starts
        sent = images.encode_for_request(images.load(photo), local.send_side)
        with Image.open(io.BytesIO(sent)) as sent_image:
            sent_size = sent_image.size
        servers.wait_ready()
        log(SECTION, f"servers up on ports {servers.ports}; {runs} interleaved latency runs")
        times = _latencies(servers.ports[False], local, photo, runs)
        latency = {name: summary_ms(values) for name, values in times.items()}
        latency["inprocess_breakdown"] = _breakdown(local, photo, runs)
        overhead = _overhead(latency)
        medians = {name: lat["median"] for name, lat in latency.items() if "median" in lat}
        log(SECTION, f"latency medians (ms) {medians}; overhead {overhead['mask']:+.1%}")
        throughput = _throughput(servers, photo, concurrency, load_seconds)
    height, width = input_size(local.loaded)
    return {
        "model": {**choice.describe(), "input": f"{width}x{height}"},
        "photo": {
            "size": f"{photo_size[0]}x{photo_size[1]}",
            "source": photo_source,
            "jpeg_kb": round(len(photo) / 1024, 1),
        },
        "sent": {"size": f"{sent_size[0]}x{sent_size[1]}", "jpeg_kb": round(len(sent) / 1024, 1)},
        "latency_ms": latency,
        "overhead": overhead,
        "throughput": throughput,
        "notes": [
            "client: BackgroundRemover(...).mask()/.remove() on the JPEG bytes through "
            "serving.server.LocalServer on 127.0.0.1 (its own process; batching off for latency)",
            "in-process: the same steps without gRPC -- images.load + encode_for_request (the "
            "client's downscale and JPEG), serving_default on those bytes, guided upsampling "
            "of the mask to the photo (serving/refine.py, the client's default), and "
            "compositing for remove",
            "overhead = client median / in-process median - 1 at concurrency 1",
            "throughput: N client threads in the benchmark process, each with its own channel, "
            "calling mask() back to back; clients and server share the machine's CPUs",
        ],
    }
