"""The pipeline, defined once for every runner (local, Kubeflow).

ingest -> statistics -> schema -> validation -> gate -> train -> IoU gate -> push
                                                   [-> rollout check]
"""

from __future__ import annotations

import json
import os

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from components.image_example_gen import ImageExampleGen
from components.iou_evaluator import IoUEvaluator
from components.pairs import id_prefixes
from components.rollout_check import RolloutCheck
from components.validation_gate import ValidationGate
from tfx_pipeline.config import PipelineConfig

TRAINER_MODULE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "components", "trainer_module.py"
)


def create_pipeline(
    config: PipelineConfig,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None = None,
    enable_cache: bool = True,
    fingerprint: str | None = None,
    module_file: str | None = TRAINER_MODULE,
) -> tfx.dsl.Pipeline:
    """``fingerprint`` identifies the input data for caching; by default it is
    computed from the folders, runners that cannot see them (Kubeflow) pass one.

    ``module_file`` ships the trainer code with the run (and keys the cache on
    it); ``None`` imports it from the installed package, as container images do.
    """
    example_gen = ImageExampleGen(
        data_dirs=list(config.data_dirs),
        group_pattern=config.group_pattern,
        eval_fraction=config.eval_fraction,
        max_side=config.max_side,
        min_usable_fraction=config.min_usable_fraction,
        input_fingerprint=fingerprint,
    )
    examples = example_gen.outputs["examples"]
    statistics_gen = tfx.components.StatisticsGen(examples=examples)
    if config.schema_dir:
        schema_gen = tfx.components.ImportSchemaGen(
            schema_file=os.path.join(config.schema_dir, "schema.pbtxt")
        )
    else:
        schema_gen = tfx.components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True
        )
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    gate = ValidationGate(anomalies=example_validator.outputs["anomalies"])

    latest_blessed = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")

    trainer = tfx.components.Trainer(
        module_file=module_file,
        run_fn=None if module_file else "components.trainer_module.run_fn",
        examples=examples,
        base_model=latest_blessed.outputs["model"] if config.warm_start else None,
        custom_config={"config": config.trainer_json()},
    )
    trainer.add_upstream_node(gate)

    evaluator = IoUEvaluator(
        examples=examples,
        model=trainer.outputs["model"],
        baseline_model=latest_blessed.outputs["model"],
        min_iou=config.min_iou,
        min_improvement=config.min_improvement,
        min_speedup=config.min_speedup,
        threshold=config.threshold,
        folders=json.dumps([p for p in id_prefixes(config.data_dirs) if p]),
        init_model=config.init_model,
        data_dirs=json.dumps(config.data_dirs),
    )
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=os.path.join(config.serving_dir, config.model_name)
            )
        ),
    )
    components = [
        example_gen,
        statistics_gen,
        schema_gen,
        example_validator,
        gate,
        latest_blessed,
        trainer,
        evaluator,
        pusher,
    ]
    if config.rollout_server:
        components.append(
            RolloutCheck(
                pushed_model=pusher.outputs["pushed_model"],
                server=config.rollout_server,
                model_name=config.model_name,
                timeout_s=config.rollout_timeout_s,
            )
        )
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_args),
    )
