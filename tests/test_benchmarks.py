"""Every benchmark at a tiny size through ``benchmarks.run``: the result files hold sane numbers.

Real parts throughout: the ImageExampleGen executor on a generated folder, the
trainer's dataset and UNet, a LocalServer in its own process reached over gRPC,
and a real (tiny, untrained) SavedModel scored on a real gzip TFRecord split.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import readme_table, report, run
from benchmarks.contact_sheet import BOX
from benchmarks.examples import write_synthetic_split
from benchmarks.model_quality import CLOSEUP_MIN_PIXELS, closeup_box, edge_split
from benchmarks.models import parse_variants
from tests.serving_fixtures import export_tiny_model

SETS = ("ccp", "hsd")
PER_SET = 3
SERVING_PHOTO = "216x384"


def _config(path: Path, pipeline_root: Path) -> Path:
    path.write_text(
        f'pipeline_root = "{pipeline_root}"\n'
        f'serving_dir = "{path.parent / "serving"}"\n'
        'group_pattern = ""\n'
        "max_side = 96\n"
        "image_height = 32\nimage_width = 32\nunet_filters = 4\nunet_depth = 2\n"
        "batch_size = 2\n"
    )
    return path


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    model = export_tiny_model(root / "models")
    split = root / "pipeline_root" / "ImageExampleGen" / "examples" / "4" / "Split-eval"
    write_synthetic_split(
        split / "data_tfrecord-00000-of-00001.gz", PER_SET * len(SETS), (192, 256), ("ccp/", "hsd/")
    )
    config = _config(root / "tiny.toml", root / "pipeline_root")
    out = root / "out"
    argv = ["--quick", "--config", str(config), "--out-dir", str(out)]
    argv += ["--ccp-dir", str(root / "no-ccp"), "--model-dir", str(model)]
    argv += ["--variants", f"tiny={model}", "--photo-size", SERVING_PHOTO]
    code = run.main(argv)
    return {"root": root, "out": out, "code": code, "model": model, "argv": argv}


def _results(bench) -> dict:
    return json.loads((bench["out"] / "results.json").read_text())["benchmarks"]


def test_every_benchmark_succeeds_and_is_stamped(bench):
    assert bench["code"] == 0
    results = _results(bench)
    assert list(results) == list(run.BENCHMARKS)
    for section in results.values():
        assert "error" not in section
        assert section["quick"] is True and section["duration_s"] > 0
        assert section["measured_at"]


def test_ingestion_measures_the_executor_and_the_raw_loop(bench):
    ingestion = _results(bench)["ingestion"]
    assert ingestion["source"] == "synthetic"  # no ccp folder: the fallback, with a note
    assert "is not present" in ingestion["notes"][0]
    assert ingestion["pairs"] == run.QUICK.ingestion_pairs
    assert ingestion["executor"]["usable"] == ingestion["pairs"] == ingestion["raw"]["usable"]
    assert sum(ingestion["executor"]["splits"].values()) == ingestion["pairs"]
    assert ingestion["executor"]["pairs_per_s"] > 0 and ingestion["raw"]["pairs_per_s"] > 0
    assert ingestion["executor"]["output_mb"] > 0
    # max_side 96 is far below the synthetic photos' size: every pair was re-encoded.
    assert ingestion["raw"]["reencoded"] == ingestion["pairs"]


def test_training_reports_steady_state_throughput(bench):
    training = _results(bench)["training"]
    assert training["model"] == "unet_f4_d2" and training["input"] == "32x32"
    assert training["timed_steps"] == run.QUICK.train_steps
    # Warm-up covers a full pass over the pool, so timed steps read the cache.
    assert training["warmup_steps"] * training["batch_size"] > run.QUICK.train_pool
    assert training["images_per_s"] > 0 and training["step_ms"]["median"] > 0
    assert training["step_ms"]["runs"] == training["timed_steps"]
    assert training["input_pipeline"]["first_pass_images_per_s"] > 0
    assert training["input_pipeline"]["cached_images_per_s"] > 0


def test_serving_latency_overhead_and_throughput(bench):
    serving = _results(bench)["serving"]
    assert serving["model"]["source"] == "given" and serving["model"]["input"] == "32x32"
    assert serving["photo"]["size"] == SERVING_PHOTO
    for name in ("client_mask", "inprocess_mask", "client_remove", "inprocess_remove"):
        latency = serving["latency_ms"][name]
        assert 0 < latency["median"] <= latency["p90"]
        assert latency["runs"] == run.QUICK.latency_runs
    assert set(serving["latency_ms"]["inprocess_breakdown"]) == {"prepare", "model", "upsample"}
    overhead = serving["overhead"]
    latency = serving["latency_ms"]
    expected = latency["client_mask"]["median"] / latency["inprocess_mask"]["median"] - 1
    assert overhead["mask"] == pytest.approx(expected, abs=0.002)
    assert overhead["met"] == (max(overhead["mask"], overhead["remove"]) <= overhead["target"])
    levels = {(level["batching"], level["clients"]): level for level in serving["throughput"]}
    assert set(levels) == {(b, c) for b in (False, True) for c in run.QUICK.concurrency}
    for level in levels.values():
        assert level["requests"] > 0 and level["requests_per_s"] > 0
    # The batching server really ran requests through its batcher.
    assert all(levels[(True, c)]["mean_batch"] >= 1 for c in run.QUICK.concurrency)


def test_model_latency_iou_per_set_and_contact_sheets(bench):
    model = _results(bench)["model"]
    tiny = model["variants"]["tiny"]
    assert tiny["input"] == "32x32" and tiny["latency_ms"]["median"] > 0
    assert set(tiny["sets"]) == set(SETS)
    for scores in tiny["sets"].values():
        assert scores["images"] == PER_SET
        for key in ("mean_iou_model_res", "mean_iou_full_res", "foreground_iou_full_res"):
            assert 0.0 <= scores[key] <= 1.0
        assert (
            0.0 <= scores["alpha_error"] <= 1.0 and 0.0 <= scores["alpha_error_model_mask"] <= 1.0
        )
        lost = scores["iou_lost_at_edge"] + scores["iou_lost_elsewhere"]
        assert lost == pytest.approx(1.0 - scores["mean_iou_full_res"], abs=2e-4)
        assert scores["closeups"] == PER_SET and 0.0 <= scores["mean_iou_closeup"] <= 1.0
    assert model["contact_sheets"]["variant"] == "tiny"
    for set_name in SETS:
        sheet = bench["out"] / f"worst_{set_name}.png"
        with Image.open(sheet) as image:
            assert image.format == "PNG"
            # A header plus one row per worst photo (fewer photos than the quick limit).
            assert image.height > PER_SET * BOX[1] and image.width <= 4 * (BOX[0] + 6) + 6


def test_edge_split_tells_outline_errors_from_wrong_regions():
    truth = np.zeros((60, 40), bool)
    truth[10:50, 10:30] = True
    shifted = np.roll(truth, 2, axis=1)  # the outline 2 photo pixels off
    at_edge, elsewhere = edge_split(truth, shifted, pixel=2.0)
    assert at_edge == pytest.approx(160 / 880) and elsewhere == 0.0
    # With finer model pixels (1 photo pixel each) the second column lies outside the band,
    # but for its two ends, which touch the top and bottom edges.
    at_edge, elsewhere = edge_split(truth, shifted, pixel=1.0)
    assert at_edge == pytest.approx(82 / 880) and elsewhere == pytest.approx(78 / 880)
    blob = truth.copy()
    blob[52:58, 32:38] = True  # something apart from the person taken for it
    at_edge, elsewhere = edge_split(truth, blob, pixel=2.0)
    assert elsewhere > 0.0 and at_edge + elsewhere == pytest.approx(1.0 - 800 / 836)
    assert edge_split(np.zeros_like(truth), np.zeros_like(truth), pixel=2.0) == (0.0, 0.0)


def test_closeup_box_frames_head_and_shoulders():
    truth = np.zeros((400, 300), bool)
    truth[100:380, 120:180] = True  # a standing person, head at row 100
    truth[100:135, 120:180] = False
    truth[100:135, 170:190] = True  # the head, off to the right
    top, bottom, left, right = closeup_box(truth)
    assert top == 72 and bottom == 226  # a tenth of 280 above the head, to 0.45 of it
    assert right - left == int(0.75 * (bottom - top))  # 3:4
    assert (left + right) / 2 == pytest.approx(180, abs=1)  # centred on the head
    # The person at the photo's left edge: the window stays inside the photo.
    at_edge = np.zeros_like(truth)
    at_edge[100:380, 0:40] = True
    assert closeup_box(at_edge)[2] == 0
    # The largest of two people; none when the frame cuts the person off.
    two = truth.copy()
    two[20:60, 240:260] = True  # a small figure in the distance, higher up
    assert closeup_box(two) == (top, bottom, left, right)
    cut_off = np.zeros_like(truth)
    cut_off[100:, 120:180] = True
    assert closeup_box(cut_off) is None
    # Nobody, or too small to be a close-up of anything.
    assert closeup_box(np.zeros_like(truth)) is None
    small = np.zeros_like(truth)
    small[10 : 10 + CLOSEUP_MIN_PIXELS, 5:20] = True
    assert closeup_box(small) is None


def test_markdown_quotes_every_section(bench):
    text = (bench["out"] / "results.md").read_text()
    for title in ("## Ingestion", "## Training throughput", "## Serving", "## Model latency"):
        assert title in text
    assert "| ImageExampleGen executor (Beam) |" in text
    assert "| client mask |" in text and "| tiny | 32x32 |" in text
    assert "Server + wire overhead at concurrency 1" in text


def test_rerun_keeps_other_sections_and_skips_iou_without_pipeline_output(bench, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(bench["out"], out)
    config = _config(tmp_path / "tiny.toml", tmp_path / "empty_root")
    argv = ["--quick", "--only", "model", "--config", str(config), "--out-dir", str(out)]
    assert run.main([*argv, "--variants", f"tiny={bench['model']}"]) == 0
    results = json.loads((out / "results.json").read_text())["benchmarks"]
    assert results["ingestion"] == _results(bench)["ingestion"]  # kept from the first run
    model = results["model"]
    assert model["eval_split"] is None and "sets" not in model["variants"]["tiny"]
    assert model["variants"]["tiny"]["latency_ms"]["median"] > 0
    assert "IoU skipped" in model["notes"][0]


def test_bad_arguments_are_refused_clearly(tmp_path):
    with pytest.raises(SystemExit, match="unknown"):
        run.main(["--only", "serving,nonsense", "--out-dir", str(tmp_path)])
    with pytest.raises(ValueError, match="name=dir"):
        parse_variants("just-a-path")
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        parse_variants(f"a={tmp_path}")


def test_markdown_renders_failed_and_skipped_sections():
    results = {
        "benchmarks": {
            "serving": {"measured_at": "now", "error": "RuntimeError: boom"},
            "model": {"measured_at": "now", "skipped": "no SavedModel"},
        }
    }
    text = report.markdown(results)
    assert "Failed: `RuntimeError: boom`" in text and "Skipped: no SavedModel" in text


README_TEXT = "# Title\n\nBefore.\n\n{begin}\n| old | table |\n{end}\n\nAfter.\n"


def test_full_model_run_rewrites_the_readme_table_only(bench, tmp_path):
    model = _results(bench)["model"]
    readme = tmp_path / "README.md"
    original = README_TEXT.format(begin=readme_table.BEGIN, end=readme_table.END)
    readme.write_text(original)
    run._update_readme(str(readme), model, quick=True)  # a smoke run speaks for nothing
    assert readme.read_text() == original
    run._update_readme(str(readme), model, quick=False)
    text = readme.read_text()
    assert text.startswith("# Title\n\nBefore.\n\n") and text.endswith("\n\nAfter.\n")
    assert "| old | table |" not in text
    tiny = model["variants"]["tiny"]
    ccp = tiny["sets"]["ccp"]
    row = next(line for line in text.splitlines() if line.startswith("| tiny |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2:5] == [
        "32×32",
        f"{tiny['latency_ms']['median']:.1f} ms",
        f"{ccp['mean_iou_full_res']:.3f}",
    ]
    assert "| target |" in text
    run._update_readme(str(readme), model, quick=False)  # idempotent: one table, not two
    assert readme.read_text() == text


def test_readme_without_markers_is_left_alone(bench, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# No table here\n")
    run._update_readme(str(readme), _results(bench)["model"], quick=False)
    assert readme.read_text() == "# No table here\n"
    assert "no <!-- make bench: model table --> marker" in capsys.readouterr().out
