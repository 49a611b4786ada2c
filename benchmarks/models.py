"""Which SavedModels the benchmarks use: given, shipped, pushed, or an untrained stand-in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import REPO, display_path, repo_path
from serving import defaults
from tfx_pipeline.config import PipelineConfig, load

SHIPPED = REPO / "models" / defaults.MODEL_NAME / "1"
VARIANT_CONFIGS = REPO / "configs" / "variants"
SAVED_MODEL_FILE = "saved_model.pb"


@dataclass(frozen=True)
class ModelChoice:
    path: Path
    source: str  # "given", "shipped", "pushed" or "untrained"

    def describe(self) -> dict[str, str]:
        return {"path": display_path(self.path), "source": self.source}


def is_saved_model(path: Path) -> bool:
    return (path / SAVED_MODEL_FILE).is_file()


def pushed_versions(config: PipelineConfig) -> list[Path]:
    """``<serving_dir>/<model_name>/<n>/`` SavedModels, oldest first."""
    model_dir = repo_path(config.serving_dir) / config.model_name
    if not model_dir.is_dir():
        return []
    versions = [p for p in model_dir.iterdir() if p.name.isdigit() and is_saved_model(p)]
    return sorted(versions, key=lambda p: int(p.name))


def model_to_serve(model_dir: str | None, config: PipelineConfig, workdir: Path) -> ModelChoice:
    """The given model, else the shipped one, else the newest pushed, else an untrained UNet.

    An untrained UNet of the configured architecture is as fast as a trained one,
    and latency is what serving benchmarks measure.
    """
    if model_dir:
        path = Path(model_dir)
        if not is_saved_model(path):
            raise FileNotFoundError(f"--model-dir {model_dir}: no {SAVED_MODEL_FILE} there")
        return ModelChoice(path, "given")
    if is_saved_model(SHIPPED):
        return ModelChoice(SHIPPED, "shipped")
    pushed = pushed_versions(config)
    if pushed:
        return ModelChoice(pushed[-1], "pushed")
    from benchmarks.common import configured_unet
    from components.export import export_saved_model

    path = workdir / "untrained"
    model = configured_unet(config)
    export_saved_model(model, str(path))
    return ModelChoice(path, "untrained")


def parse_variants(text: str) -> dict[str, Path]:
    """``name=dir,name=dir`` -> {name: dir}, each a SavedModel."""
    variants: dict[str, Path] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--variants expects name=dir[,name=dir...], got {item!r}")
        if name in variants:
            raise ValueError(f"--variants names {name!r} twice")
        if not is_saved_model(Path(path)):
            raise FileNotFoundError(f"--variants {name}={path}: no {SAVED_MODEL_FILE} there")
        variants[name] = Path(path)
    return variants


def default_variants(config: PipelineConfig) -> dict[str, Path]:
    """The shipped model, every pushed version (newest first), then the newest
    model of each trained ``configs/variants`` config (``make variants``).
    The first gets the contact sheets."""
    variants = {"shipped": SHIPPED} if is_saved_model(SHIPPED) else {}
    for path in reversed(pushed_versions(config)):
        variants[f"pushed-v{path.name}"] = path
    for variant_config in sorted(VARIANT_CONFIGS.glob("*.toml")):
        pushed = pushed_versions(load(variant_config))
        if pushed:
            variants[variant_config.stem] = pushed[-1]
    return variants


def input_size(loaded) -> tuple[int, int]:
    """(height, width) the model runs at, from its ``predict_float`` signature."""
    signature = loaded.signatures[defaults.SIGNATURE_FLOAT]
    spec = signature.structured_input_signature[1]["pixels"]
    return int(spec.shape[1]), int(spec.shape[2])
