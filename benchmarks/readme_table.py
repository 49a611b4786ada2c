"""Keeps README.md's model table in step with the last full `make bench` model run.

Copying figures by hand is how READMEs drift from what was measured: the table
between the two markers is rewritten from results.json, the rest of the file is
left alone.
"""

from __future__ import annotations

from pathlib import Path

BEGIN = "<!-- make bench: model table -->"
END = "<!-- /make bench: model table -->"
# Not ours to measure again: MediaPipe on the same photos (../shared/data/README.md)
# and the targets of the issue "Real photos".
REFERENCE_ROWS = [
    [
        "MediaPipe selfie segmentation 256×256 (reference)",
        "",
        "",
        "~8 ms",
        "0.924",
        "",
        "0.875",
        "",
    ],
    ["MediaPipe pose segmentation (reference)", "", "", "~50 ms", "0.936", "", "0.787", ""],
    ["target", "", "", "≤ 25 ms", "≥ 0.95", "", "≥ 0.90", ""],
]


def _iou(scores: dict, key: str) -> str:
    value = scores.get(key)
    return "" if value is None else f"{value:.3f}"


def table(model: dict, sets: tuple[str, ...] = ("ccp", "hsd")) -> str:
    """One row per variant: latency, then each set's IoU bilinear and refined."""
    header = ["variant", "SavedModel", "input (w×h)", "latency"]
    for name in sets:
        header += [name, f"{name} refined"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, variant in model["variants"].items():
        row = [name, f"`{variant['path']}`", variant["input"].replace("x", "×")]
        row.append(f"{variant['latency_ms']['median']:.1f} ms")
        for set_name in sets:
            scores = (variant.get("sets") or {}).get(set_name, {})
            row += [_iou(scores, "mean_iou_full_res"), _iou(scores, "mean_iou_full_res_refined")]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["| " + " | ".join(row) + " |" for row in REFERENCE_ROWS]
    stamp = model.get("measured_at", "?")
    lines.append("")
    lines.append(
        f"_`make bench`, {stamp}: latency is the median of in-process calls at the model's "
        "input, batch 1; IoU is the mean per-image foreground IoU on the eval splits at the "
        "photo's resolution, upsampled bilinearly and by the client's guided filter (refined)._"
    )
    return "\n".join(lines)


def update(readme: Path, model: dict) -> bool:
    """Rewrites the marked block; False (file untouched) if the markers are missing."""
    text = readme.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return False
    block = f"{BEGIN}\n{table(model)}\n{END}"
    readme.write_text(text[:start] + block + text[end + len(END) :])
    return True
