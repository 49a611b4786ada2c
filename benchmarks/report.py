"""results.json (merged with earlier runs of other benchmarks) and a markdown rendering."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

ORDER = ("ingestion", "training", "serving", "model")


def merge(path: Path, machine: dict, sections: dict[str, dict]) -> dict:
    """Earlier results of benchmarks not run this time are kept, each with its own stamp."""
    results = {"benchmarks": {}}
    if path.is_file():
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError:
            results = {"benchmarks": {}}
    results["machine"] = machine
    results.setdefault("benchmarks", {}).update(sections)
    return results


def write(out_dir: Path, results: dict) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "results.json", out_dir / "results.md"
    json_path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join("" if cell is None else str(cell) for cell in row) + " |" for row in rows
    ]
    return "\n".join(lines)


def _stamp(section: dict) -> str:
    quick = " (--quick: small sizes, indicative only)" if section.get("quick") else ""
    load = section.get("load_average_1min")
    busy = f", load average {load} at start" if load is not None else ""
    return f"_Measured {section.get('measured_at', '?')}{busy}{quick}._"


def _notes(section: dict) -> str:
    return "\n".join(f"- {note}" for note in section.get("notes", []))


def _ingestion(s: dict) -> str:
    rows = [
        ["ImageExampleGen executor (Beam)", s["executor"]["pairs_per_s"], s["executor"]["seconds"]],
        ["decode + re-encode only", s["raw"]["pairs_per_s"], s["raw"]["seconds"]],
    ]
    head = f"{s['pairs']} pairs from `{s['data_dir']}` ({s['source']}), max side {s['max_side']}."
    return "\n\n".join([head, _table(["path", "pairs/s", "seconds"], rows)])


def _training(s: dict) -> str:
    rows = [
        [
            f"{s['model']} {s['input']}",
            s["batch_size"],
            s["images_per_s"],
            s["step_ms"]["median"],
            s["input_pipeline"]["first_pass_images_per_s"],
            s["input_pipeline"]["cached_images_per_s"],
        ]
    ]
    header = ["model", "batch", "train images/s", "step ms (median)", "input first pass img/s"]
    header.append("input cached img/s")
    head = (
        f"{s['timed_steps']} timed steps after {s['warmup_steps']} warm-up; "
        f"records: {s['records']}."
    )
    return "\n\n".join([head, _table(header, rows)])


def _serving(s: dict) -> str:
    lat = s["latency_ms"]
    rows = [
        [name.replace("_", " "), lat[name]["median"], lat[name]["p90"]]
        for name in ("client_mask", "inprocess_mask", "client_remove", "inprocess_remove")
    ]
    rows += [
        [f"in-process: {part}", v["median"], v["p90"]]
        for part, v in lat["inprocess_breakdown"].items()
    ]
    over = s["overhead"]
    verdict = "met" if over["met"] else "NOT met"
    overhead = (
        f"Server + wire overhead at concurrency 1: mask {over['mask']:+.1%} "
        f"({over['added_ms']['mask']:+} ms), remove {over['remove']:+.1%} "
        f"({over['added_ms']['remove']:+} ms); target <= {over['target']:.0%}: {verdict}."
    )
    load_rows = [
        [
            "on" if level["batching"] else "off",
            level["clients"],
            level["requests_per_s"],
            level["latency_ms"]["median"],
            level["latency_ms"]["p90"],
            level.get("mean_batch", "") or "",
        ]
        for level in s["throughput"]
    ]
    head = (
        f"Model `{s['model']['path']}` ({s['model']['source']}, input {s['model']['input']}); "
        f"photo {s['photo']['size']} ({s['photo']['source']}, {s['photo']['jpeg_kb']} KB), "
        f"sent as {s['sent']['size']} ({s['sent']['jpeg_kb']} KB)."
    )
    return "\n\n".join(
        [
            head,
            _table(["latency", "median ms", "p90 ms"], rows),
            overhead,
            _table(
                ["batching", "clients", "requests/s", "median ms", "p90 ms", "mean batch"],
                load_rows,
            ),
        ]
    )


def _model(s: dict) -> str:
    parts = []
    if s.get("eval_split"):
        parts.append(f"Eval split `{s['eval_split']}`, threshold {s['threshold']}.")
    rows = []
    for name, v in s["variants"].items():
        sets = v.get("sets") or {"-": {}}
        for set_, scores in sets.items():
            rows.append(
                [
                    name,
                    v["input"],
                    v["latency_ms"]["median"],
                    set_,
                    scores.get("images", ""),
                    scores.get("mean_iou_model_res", ""),
                    scores.get("mean_iou_full_res", ""),
                    scores.get("mean_iou_full_res_refined", ""),
                    scores.get("foreground_iou_full_res", ""),
                    scores.get("iou_lost_at_edge", ""),
                    scores.get("iou_lost_elsewhere", ""),
                    scores.get("alpha_error", ""),
                    scores.get("alpha_error_model_mask", ""),
                    scores.get("mean_iou_closeup", ""),
                ]
            )
    header = ["variant", "input", "ms/image", "set", "images", "mean IoU (model res)"]
    header += ["mean IoU (full res)", "mean IoU (full res, refined)", "foreground IoU (full res)"]
    header += ["IoU lost at edges", "IoU lost elsewhere", "alpha error", "alpha error (mask)"]
    header += ["mean IoU (close-ups)"]
    parts.append(_table(header, rows))
    sheets = s.get("contact_sheets") or {}
    if sheets:
        links = [f"`{path}`" for key, path in sheets.items() if key != "variant"]
        parts.append(f"Worst eval photos of `{sheets['variant']}`: {', '.join(links)}.")
    return "\n\n".join(parts)


RENDERERS: dict[str, tuple[str, Callable[[dict], str]]] = {
    "ingestion": ("Ingestion", _ingestion),
    "training": ("Training throughput", _training),
    "serving": ("Serving", _serving),
    "model": ("Model latency and IoU per variant", _model),
}


def markdown(results: dict) -> str:
    machine = results.get("machine", {})
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `make bench` on {machine.get('cpus', '?')} CPUs "
        f"({machine.get('platform', '?')}, TensorFlow {machine.get('tensorflow', '?')}). "
        "Sizes are width x height.",
    ]
    benchmarks = results.get("benchmarks", {})
    for key in ORDER:
        if key not in benchmarks:
            continue
        title, render = RENDERERS[key]
        section = benchmarks[key]
        lines += ["", f"## {title}", "", _stamp(section), ""]
        if "error" in section:
            lines.append(f"Failed: `{section['error']}`")
        elif "skipped" in section:
            lines.append(f"Skipped: {section['skipped']}")
        else:
            lines.append(render(section))
        if section.get("notes"):
            lines += ["", _notes(section)]
    return "\n".join(lines) + "\n"
