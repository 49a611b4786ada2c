"""Submits a compiled pipeline spec to Kubeflow Pipelines.

KFP_ENDPOINT=https://kfp.example.com python -m tfx_pipeline.kubeflow_submit build/pipeline.json
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

ENDPOINT_VARIABLE = "KFP_ENDPOINT"


def submit(spec_path: str, endpoint: str, experiment: str, run_name: str | None) -> str:
    with warnings.catch_warnings():  # kfp warns about its own future on every call
        warnings.simplefilter("ignore")
        import kfp

        client = kfp.Client(host=endpoint)
        run = client.create_run_from_pipeline_package(
            spec_path, arguments={}, experiment_name=experiment, run_name=run_name
        )
    return run.run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", help="the compiled pipeline (make kubeflow)")
    parser.add_argument("--experiment", default="background-remover")
    parser.add_argument("--run-name")
    args = parser.parse_args(argv)
    endpoint = os.environ.get(ENDPOINT_VARIABLE, "")
    if not endpoint:
        print(
            f"error: set {ENDPOINT_VARIABLE} to your Kubeflow Pipelines API address, "
            f"e.g. {ENDPOINT_VARIABLE}=http://localhost:8888 after "
            "'kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8888:80'",
            file=sys.stderr,
        )
        return 2
    if not os.path.exists(args.spec):
        print(f"error: {args.spec} does not exist; run 'make kubeflow' first", file=sys.stderr)
        return 2
    try:
        run_id = submit(args.spec, endpoint, args.experiment, args.run_name)
    except Exception as e:  # noqa: BLE001 - any client failure is one readable line
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(
            f"error: could not submit to Kubeflow Pipelines at {endpoint}: {reason}",
            file=sys.stderr,
        )
        return 2
    print(f"submitted run {run_id} to {endpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
