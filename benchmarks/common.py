"""Timing, paths and test photos shared by every benchmark."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def log(section: str, message: str) -> None:
    """Progress on stdout, flushed so ``make bench`` shows it as it happens."""
    print(f"[{section}] {message}", flush=True)


def repo_path(path: str | os.PathLike) -> Path:
    """Config paths are relative to the repository, whatever the working directory."""
    path = Path(path)
    return path if path.is_absolute() else REPO / path


def display_path(path: str | os.PathLike) -> str:
    """Paths in and beside the repository are shown relative to it, as the README uses them."""
    path = Path(path).resolve()
    if path.is_relative_to(REPO.parent):
        return os.path.relpath(path, REPO)
    return str(path)


def summary_ms(seconds: list[float]) -> dict[str, float]:
    """Median, 90th percentile and mean in milliseconds."""
    if not seconds:
        raise ValueError("no timings to summarise")
    ms = np.asarray(seconds) * 1000.0
    return {
        "median": round(float(np.median(ms)), 2),
        "p90": round(float(np.percentile(ms, 90)), 2),
        "mean": round(float(np.mean(ms)), 2),
        "runs": len(seconds),
    }


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def time_calls(fn: Callable[[], object], runs: int, warmup: int = 2) -> list[float]:
    """Seconds per call of ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return [timed(fn) for _ in range(runs)]


def rate(count: float, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else 0.0


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator > 0 else float("nan")


def parse_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` -> (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected WIDTHxHEIGHT such as 1080x1920, got {text!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"size must be positive, got {text!r}")
    return width, height


def machine() -> dict[str, object]:
    """What the numbers were measured on, including how busy the machine was."""
    import tensorflow as tf

    return {
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
    }


def synthetic_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth photo-like picture (gradients, soft blobs, grain) that JPEG handles like a photo."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (6, 4, 3)).astype(np.uint8)
    base = np.asarray(
        Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32
    )
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    blob = np.exp(
        -(((x - 0.5 * width) / (0.18 * width)) ** 2 + ((y - 0.55 * height) / (0.3 * height)) ** 2)
    )
    person = np.array([180, 120, 90], np.float32)
    pixels = base * (1 - blob[..., None]) + person * blob[..., None]
    pixels += rng.normal(0, 3.0, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def configured_unet(config):
    """The UNet a PipelineConfig describes, as the trainer builds it."""
    import dataclasses

    from components.unet import build_configured_unet

    return build_configured_unet(dataclasses.asdict(config))
