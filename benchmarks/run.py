"""Runs the benchmarks and writes build/bench/results.json and results.md.

python -m benchmarks.run                      # everything, full size
python -m benchmarks.run --only serving,model --quick
python -m benchmarks.run --model-dir models/bgremover/1 --variants a=dirA,b=dirB
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import readme_table, report
from benchmarks.common import REPO, SHARED_DATA, log, machine, parse_size

BENCHMARKS = report.ORDER


@dataclass(frozen=True)
class Budget:
    """How much each benchmark measures; --quick shrinks every figure."""

    ingestion_pairs: int | None  # None: the whole folder
    train_steps: int
    train_warmup: int
    train_pool: int
    latency_runs: int  # at least 30 for the README's figures
    model_latency_runs: int  # model calls are short and noisy on a shared CPU: take many
    concurrency: tuple[int, ...]
    load_seconds: float
    eval_per_set: int | None  # None: the whole eval split
    worst_rows: int


FULL = Budget(None, 40, 5, 64, 30, 200, (1, 4, 16), 8.0, None, 8)
QUICK = Budget(16, 3, 1, 8, 5, 5, (1, 4, 16), 1.0, 6, 3)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--config",
        default=str(REPO / "configs" / "real.toml"),
        help="pipeline config: model architecture, batch, max_side, pipeline_root, serving_dir",
    )
    parser.add_argument("--out-dir", default=str(REPO / "build" / "bench"))
    parser.add_argument("--model-dir", help="SavedModel to serve (default: shipped, else pushed)")
    parser.add_argument("--variants", help="name=dir,... SavedModels for latency and IoU")
    parser.add_argument("--ccp-dir", default=str(SHARED_DATA / "ccp"), help="ingestion data")
    parser.add_argument("--photo-size", default="1080x1920", help="serving photo WIDTHxHEIGHT")
    parser.add_argument(
        "--readme",
        default=str(REPO / "README.md"),
        help="file whose marked model table a full model run rewrites ('' to leave it)",
    )
    return parser


def _selected(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown or not chosen:
        raise SystemExit(f"--only: unknown {unknown}; choose from {', '.join(BENCHMARKS)}")
    return [name for name in BENCHMARKS if name in chosen]


def _runners(args: argparse.Namespace, budget: Budget, workdir: Path) -> dict[str, Callable]:
    """Each benchmark as a no-argument call; imports stay lazy so --only stays quick."""
    from tfx_pipeline import config as config_lib

    config = config_lib.load(args.config)
    out_dir = Path(args.out_dir)

    def ingestion() -> dict:
        from benchmarks import ingestion

        return ingestion.run(config, Path(args.ccp_dir), budget.ingestion_pairs, workdir)

    def training() -> dict:
        from benchmarks import training

        return training.run(
            config, budget.train_steps, budget.train_warmup, budget.train_pool, workdir
        )

    def serving() -> dict:
        from benchmarks import models, serving_latency

        choice = models.model_to_serve(args.model_dir, config, workdir)
        return serving_latency.run(
            choice,
            parse_size(args.photo_size),
            Path(args.ccp_dir),
            budget.latency_runs,
            list(budget.concurrency),
            budget.load_seconds,
        )

    def model() -> dict:
        from benchmarks import model_quality, models

        variants = (
            models.parse_variants(args.variants)
            if args.variants
            else models.default_variants(config)
        )
        return model_quality.run(
            config,
            variants,
            budget.model_latency_runs,
            budget.eval_per_set,
            budget.worst_rows,
            out_dir,
        )

    return {
        "ingestion": ingestion,
        "training": training,
        "serving": serving,
        "model": model,
    }


def _run_one(name: str, runner: Callable[[], dict], quick: bool) -> dict:
    stamp = {
        "measured_at": datetime.datetime.now().isoformat(timespec="seconds"),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "quick": quick,
    }
    log(name, "starting")
    started = time.perf_counter()
    try:
        section = runner()
    except Exception as error:  # one failing benchmark must not lose the others' results
        traceback.print_exc()
        section = {"error": f"{type(error).__name__}: {error}"}
    seconds = time.perf_counter() - started
    log(name, section.get("error", f"done in {seconds:.1f} s"))
    return {**stamp, "duration_s": round(seconds, 1), **section}


def _update_readme(readme: str, model: dict | None, quick: bool) -> None:
    """Only a full run that measured IoU speaks for the README."""
    if not readme or quick or not model or "error" in model or not model.get("eval_split"):
        return
    if readme_table.update(Path(readme), model):
        print(f"model table rewritten in {readme}", flush=True)
    else:
        print(f"{readme} has no {readme_table.BEGIN} marker: table not written", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    selected = _selected(args.only)
    parse_size(args.photo_size)
    budget = QUICK if args.quick else FULL
    out_dir = Path(args.out_dir)
    sections = {}
    with tempfile.TemporaryDirectory(prefix="bgremover-bench-") as workdir:
        runners = _runners(args, budget, Path(workdir))
        for name in selected:
            sections[name] = _run_one(name, runners[name], args.quick)
    results = report.merge(out_dir / "results.json", machine(), sections)
    json_path, md_path = report.write(out_dir, results)
    print(f"results: {json_path} and {md_path}", flush=True)
    _update_readme(args.readme, sections.get("model"), args.quick)
    failed = [name for name, section in sections.items() if "error" in section]
    if failed:
        print(f"failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO lines drown progress
    raise SystemExit(main())
