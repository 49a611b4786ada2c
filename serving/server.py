"""A TensorFlow-Serving-compatible gRPC server for laptops and CI.

It speaks TF Serving's own API (``PredictionService.Predict`` and
``GetModelMetadata``, ``ModelService.GetModelStatus`` and the standard gRPC
health service) over the official ``tensorflow_serving.apis`` messages, so the
client and CLI work unchanged against it or the official TF Serving image.

    python -m serving.server --serving-dir build/serving --model-name bgremover --port 8500
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import defaults, tensor_io
from serving.model_store import BatchOptions, ModelStore, ServedModel, ServingError

log = logging.getLogger(__name__)

SIGNATURE_DEF_FIELD = "signature_def"
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
# Like TF Serving (INT32_MAX): full-resolution photos exceed gRPC's 4 MB default.
MAX_MESSAGE_BYTES = 2**31 - 1


def _version_choice(spec: model_pb2.ModelSpec) -> tuple[int | None, str]:
    """(version, label) of a ModelSpec; both unset means "latest"."""
    version = spec.version.value if spec.HasField("version") else None
    return version, spec.version_label


def _resolve(store: ModelStore, spec: model_pb2.ModelSpec) -> ServedModel:
    version, label = _version_choice(spec)
    return store.resolve(spec.name, version, label)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata (Classify/Regress/MultiInference stay UNIMPLEMENTED)."""

    def __init__(self, store: ModelStore) -> None:
        self._store = store

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext):
        try:
            model = _resolve(self._store, request.model_spec)
            signature_name = request.model_spec.signature_name or defaults.SIGNATURE_BYTES
            signature = model.signature_def(signature_name)
            inputs = tensor_io.parse_inputs(signature, request.inputs)
            wanted = tensor_io.check_output_filter(signature, request.output_filter)
            outputs = model.predict(signature_name, inputs)
        except ServingError as error:
            context.abort(error.code, error.message)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self._store.model_name
        response.model_spec.version.value = model.version
        response.model_spec.signature_name = signature_name
        for alias in wanted:
            response.outputs[alias].CopyFrom(tensor_io.to_proto(outputs[alias]))
        return response

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ):
        try:
            if not request.metadata_field:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "GetModelMetadataRequest must specify at least one metadata_field",
                )
            for field in request.metadata_field:
                if field != SIGNATURE_DEF_FIELD:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {field} is not supported"
                    )
            model = _resolve(self._store, request.model_spec)
        except ServingError as error:
            context.abort(error.code, error.message)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in model.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self._store.model_name
        response.model_spec.version.value = model.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus (HandleReloadConfigRequest stays UNIMPLEMENTED)."""

    def __init__(self, store: ModelStore) -> None:
        self._store = store

    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ):
        version, label = _version_choice(request.model_spec)
        try:
            statuses = self._store.statuses(request.model_spec.name, version, label)
        except ServingError as error:
            context.abort(error.code, error.message)
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            entry = response.model_version_status.add()
            entry.version = status.version
            entry.state = int(status.state)
            entry.status.error_code = status.error_code.value[0]
            entry.status.error_message = status.error_message
        return response


class LocalServer:
    """The server as an object: ``with LocalServer(dir) as s: port = s.port``."""

    def __init__(
        self,
        serving_dir: str | os.PathLike,
        model_name: str = defaults.MODEL_NAME,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        poll_seconds: float = 2.0,
        max_versions: int = 1,
        labels: Mapping[str, int] | None = None,
        enable_batching: bool = False,
        max_batch_size: int = 8,
        batch_timeout_ms: float = 5.0,
        fallback_model: str | os.PathLike | None = None,
        max_workers: int = 16,
        settle_seconds: float = 1.0,
    ) -> None:
        batching = (
            BatchOptions(max_batch_size, batch_timeout_ms / 1000.0) if enable_batching else None
        )
        self.store = ModelStore(
            serving_dir,
            model_name,
            max_versions=max_versions,
            labels=labels,
            fallback_model=fallback_model,
            batching=batching,
            settle_seconds=settle_seconds,
        )
        self.host = host
        self.port = port
        self._poll_seconds = poll_seconds
        self._max_workers = max_workers
        self._health = health.HealthServicer(experimental_non_blocking=True)
        self._server: grpc.Server | None = None
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> int:
        """Binds, starts serving and polling; returns the bound port (useful with port=0)."""
        server = grpc.server(
            futures.ThreadPoolExecutor(self._max_workers),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.store), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.store), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        if self.port == 0:
            raise OSError(f"could not bind {self.host}")
        self._server = server
        self._set_health()
        server.start()
        self._poller = threading.Thread(target=self._poll_loop, name="version-poller", daemon=True)
        self._poller.start()
        log.info("serving model %s on %s", self.store.model_name, self.address)
        return self.port

    def wait_until_available(self, timeout: float = 60.0) -> int:
        """Blocks until a version serves; returns the newest served version."""
        deadline = time.monotonic() + timeout
        while not self.store.served_versions():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no version of {self.store.model_name} loaded in {timeout} s")
            time.sleep(0.05)
        return self.store.served_versions()[-1]

    def stop(self, grace: float = 10.0) -> None:
        """Stops accepting requests, lets in-flight ones finish (up to ``grace`` s), unloads."""
        if self._server is None:
            return
        self._health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        self._stopping.set()
        if self._poller is not None:
            self._poller.join(timeout=grace)
        if self._poller is None or not self._poller.is_alive():  # else a slow load: skip
            self.store.close()
        self._server = None
        log.info("stopped serving model %s", self.store.model_name)

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.store.poll()
            except Exception:  # a bad scan must not end polling; the next one may work
                log.exception("polling %s failed", self.store.model_name)
            self._set_health()
            self._stopping.wait(self._poll_seconds)

    def _set_health(self) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.store.served_versions()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", PREDICTION_SERVICE, MODEL_SERVICE):
            self._health.set(service, status)


def _label(text: str) -> tuple[str, int]:
    name, _, version = text.partition("=")
    if not name or not version.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=VERSION, got {text!r}")
    return name, int(version)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--serving-dir", required=True, help="holds <model-name>/<version>/")
    parser.add_argument("--model-name", default=defaults.MODEL_NAME)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept remote clients")
    parser.add_argument("--port", type=int, default=int(defaults.SERVER_ADDRESS.rsplit(":", 1)[1]))
    parser.add_argument("--poll-seconds", type=float, default=2.0)
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=1.0,
        help="a new version must be unchanged this long",
    )
    parser.add_argument("--max-versions", type=int, default=1, help="newest N versions served")
    parser.add_argument(
        "--label", type=_label, action="append", default=[], help="NAME=VERSION, repeatable"
    )
    parser.add_argument("--enable-batching", action="store_true")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout-ms", type=float, default=5.0)
    parser.add_argument("--max-workers", type=int, default=16, help="concurrent requests")
    parser.add_argument("--fallback-model", help="SavedModel served as version 1 until one exists")
    parser.add_argument("--grace-seconds", type=float, default=10.0, help="on SIGTERM")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = LocalServer(
        args.serving_dir,
        args.model_name,
        host=args.host,
        port=args.port,
        poll_seconds=args.poll_seconds,
        max_versions=args.max_versions,
        labels=dict(args.label),
        enable_batching=args.enable_batching,
        max_batch_size=args.max_batch_size,
        batch_timeout_ms=args.batch_timeout_ms,
        fallback_model=args.fallback_model,
        max_workers=args.max_workers,
        settle_seconds=args.settle_seconds,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    stop.wait()
    log.info("shutting down: finishing in-flight requests")
    server.stop(args.grace_seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
