"""The lean client speaks TF Serving's wire format and stays free of TensorFlow."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import any_pb2
from PIL import Image
from tensorflow.core.framework import tensor_pb2 as tf_tensor_pb2
from tensorflow.core.framework import types_pb2 as tf_types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2 as tf_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2 as tf_status_pb2
from tensorflow_serving.apis import predict_pb2 as tf_predict_pb2

from serving import client as client_module
from serving import images
from serving.client import (
    BackgroundRemover,
    BackgroundRemoverError,
    InvalidImage,
    InvalidOption,
    ModelNotFound,
    RequestFailed,
    ServerUnavailable,
    to_array,
)
from serving.protos import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

REPO = Path(__file__).resolve().parent.parent


def _official_predict_request(version=None, label=None) -> tf_predict_pb2.PredictRequest:
    request = tf_predict_pb2.PredictRequest()
    request.model_spec.name = "bgremover"
    request.model_spec.signature_name = "serving_default"
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    tensor = request.inputs["images"]
    tensor.dtype = tf_types_pb2.DT_STRING
    tensor.tensor_shape.dim.add(size=2)
    tensor.string_val.extend([b"\xff\xd8jpeg-one", b"\x89PNG-two"])
    return request


@pytest.mark.parametrize(("version", "label"), [(None, None), (7, None), (None, "stable")])
def test_predict_request_bytes_equal_the_official_ones(version, label):
    remover = BackgroundRemover("127.0.0.1:1", version=version, label=label)
    ours = predict_pb2.PredictRequest(model_spec=remover.model_spec("serving_default"))
    ours.inputs["images"].CopyFrom(
        client_module.string_tensor([b"\xff\xd8jpeg-one", b"\x89PNG-two"])
    )
    official = _official_predict_request(version, label)
    assert ours.SerializeToString(deterministic=True) == official.SerializeToString(
        deterministic=True
    )
    remover.close()


def test_status_and_metadata_requests_bytes_equal_the_official_ones():
    remover = BackgroundRemover("127.0.0.1:1", version=3)
    ours = get_model_status_pb2.GetModelStatusRequest(model_spec=remover.model_spec())
    official = tf_status_pb2.GetModelStatusRequest()
    official.model_spec.name = "bgremover"
    official.model_spec.version.value = 3
    assert ours.SerializeToString() == official.SerializeToString()

    ours_meta = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=remover.model_spec(), metadata_field=["signature_def"]
    )
    official_meta = tf_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    official_meta.model_spec.CopyFrom(official.model_spec)
    assert ours_meta.SerializeToString() == official_meta.SerializeToString()
    remover.close()


@pytest.mark.parametrize("packed", [True, False])
def test_official_predict_response_parses_to_the_same_mask(packed):
    mask = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
    tensor = tf_tensor_pb2.TensorProto(dtype=tf_types_pb2.DT_UINT8)
    for size in mask.shape:
        tensor.tensor_shape.dim.add(size=size)
    if packed:
        tensor.tensor_content = mask.tobytes()
    else:
        tensor.int_val.extend(int(v) for v in mask.ravel())
    official = tf_predict_pb2.PredictResponse()
    official.outputs["mask"].CopyFrom(tensor)
    official.outputs["height"].dtype = tf_types_pb2.DT_INT32
    official.outputs["height"].tensor_shape.dim.add(size=2)
    official.outputs["height"].int_val.extend([480, 640])
    official.model_spec.name = "bgremover"
    official.model_spec.version.value = 5

    ours = predict_pb2.PredictResponse.FromString(official.SerializeToString())
    np.testing.assert_array_equal(to_array(ours.outputs["mask"]), mask)
    np.testing.assert_array_equal(to_array(ours.outputs["height"]), [480, 640])
    assert ours.model_spec.version.value == 5


def test_a_tensor_of_one_repeated_value_in_tensorflows_compact_form_is_filled():
    """make_tensor_proto stores a uniform tensor as its one value (a blank mask)."""
    compact = tf_tensor_pb2.TensorProto(dtype=tf_types_pb2.DT_UINT8)
    for size in (1, 3, 4):
        compact.tensor_shape.dim.add(size=size)
    compact.int_val.append(255)
    ours = predict_pb2.PredictResponse()
    ours.outputs["mask"].ParseFromString(compact.SerializeToString())
    np.testing.assert_array_equal(to_array(ours.outputs["mask"]), np.full((1, 3, 4), 255))


def test_official_status_and_metadata_responses_parse():
    status = tf_status_pb2.GetModelStatusResponse()
    broken = status.model_version_status.add(version=1, state=tf_status_pb2.ModelVersionStatus.END)
    broken.status.error_code = 9  # FAILED_PRECONDITION
    broken.status.error_message = "could not load"
    status.model_version_status.add(version=2, state=tf_status_pb2.ModelVersionStatus.AVAILABLE)
    ours = get_model_status_pb2.GetModelStatusResponse.FromString(status.SerializeToString())
    [first, second] = ours.model_version_status
    assert (first.version, first.state, first.status.error_code) == (1, 50, 9)
    assert get_model_status_pb2.Code.Name(first.status.error_code) == "FAILED_PRECONDITION"
    assert first.status.error_message == "could not load"
    assert second.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE

    signatures = tf_metadata_pb2.SignatureDefMap()
    sig = signatures.signature_def["serving_default"]
    sig.method_name = "tensorflow/serving/predict"
    sig.inputs["images"].name = "serving_default_images:0"
    sig.inputs["images"].dtype = tf_types_pb2.DT_STRING
    sig.inputs["images"].tensor_shape.dim.add(size=-1)
    packed = any_pb2.Any()
    packed.Pack(signatures)
    assert packed.type_url.endswith("/" + client_module.SIGNATURE_DEF_MAP_TYPE)
    metadata = tf_metadata_pb2.GetModelMetadataResponse()
    metadata.metadata["signature_def"].CopyFrom(packed)
    ours_meta = get_model_metadata_pb2.GetModelMetadataResponse.FromString(
        metadata.SerializeToString()
    )
    parsed = get_model_metadata_pb2.SignatureDefMap.FromString(
        ours_meta.metadata["signature_def"].value
    )
    info = parsed.signature_def["serving_default"].inputs["images"]
    assert (info.name, info.dtype, info.tensor_shape.dim[0].size) == (
        "serving_default_images:0",
        7,
        -1,
    )


def _run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_client_and_cli_import_no_tensorflow():
    out = _run_python(
        "import sys, serving.cli, serving.client, serving.compositing\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'tensorflow_serving', 'keras')))"
    )
    assert out == "[]"


def test_help_imports_nothing_heavy():
    """--help stays instant because it loads none of the heavy modules (a
    deterministic check; the time itself belongs to benchmarks)."""
    out = _run_python(
        "import sys\n"
        "from serving import cli\n"
        "code = cli.main(['remove', '--help'])\n"
        "print(code, sorted({m.split('.')[0] for m in "
        "sys.modules if m.split('.')[0] in ('numpy', 'PIL', 'grpc', 'tqdm', 'tensorflow')}))"
    )
    code, heavy = out.splitlines()[-1].split(" ", 1)
    assert code == "0"
    assert heavy == "[]"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_server_down_is_a_readable_error_after_retries():
    address = f"127.0.0.1:{_free_port()}"
    remover = BackgroundRemover(address, retries=2, backoff=0.1, timeout=5)
    start = time.monotonic()
    with pytest.raises(ServerUnavailable, match="make serve") as caught:
        remover.status()
    assert address in str(caught.value)
    assert time.monotonic() - start >= 0.1 + 0.2  # two backoffs happened
    remover.close()


def _status_server(port: int) -> grpc.Server:
    """A bare ModelService on ``port`` that answers version 4, END (not started)."""
    answer = get_model_status_pb2.GetModelStatusResponse()
    answer.model_version_status.add(version=4, state=get_model_status_pb2.ModelVersionStatus.END)
    handler = grpc.method_handlers_generic_handler(
        "tensorflow.serving.ModelService",
        {
            "GetModelStatus": grpc.unary_unary_rpc_method_handler(
                lambda request, context: answer,
                request_deserializer=get_model_status_pb2.GetModelStatusRequest.FromString,
                response_serializer=get_model_status_pb2.GetModelStatusResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(1), handlers=[handler])
    server.add_insecure_port(f"127.0.0.1:{port}")
    return server


def test_unavailable_is_retried_until_a_late_server_answers():
    """A server that comes up while the client backs off is reached without an error."""
    port = _free_port()
    late = _status_server(port)
    timer = threading.Timer(0.4, late.start)
    timer.start()
    try:
        with BackgroundRemover(f"127.0.0.1:{port}", retries=6, backoff=0.2) as remover:
            assert remover.status() == [client_module.VersionStatus(4, "END")]
    finally:
        timer.join()
        late.stop(0)


def test_a_server_that_answered_before_is_waited_for_through_a_restart():
    """A restarting server (a new pod, `make serve` again) takes 10-20 s; three quick
    retries ended a batch mid-way. One never reached still fails at once."""
    port = _free_port()
    first, restarted = _status_server(port), []
    first.start()

    def restart() -> None:  # bound only now: the port is free again
        restarted.append(_status_server(port))
        restarted[0].start()

    with BackgroundRemover(f"127.0.0.1:{port}", retries=1, backoff=0.1) as remover:
        remover.status()
        first.stop(0).wait()
        timer = threading.Timer(3.0, restart)
        timer.start()
        try:
            started = time.monotonic()
            assert remover.status() == [client_module.VersionStatus(4, "END")]
            assert 2.5 <= time.monotonic() - started < 15  # waited past its one retry
        finally:
            timer.join()
            for server in restarted:
                server.stop(0)


def _jpeg(size: tuple[int, int], color=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()


def test_mask_comes_back_at_the_photos_full_size(server):
    with BackgroundRemover(server, max_side=64) as remover:
        mask = remover.mask(_jpeg((300, 120)))
        assert (mask.mode, mask.size) == ("L", (300, 120))
        masks = remover.masks([_jpeg((40, 50)), Image.new("L", (20, 10), 128)])
        assert [m.size for m in masks] == [(40, 50), (20, 10)]
        [status] = remover.status()
        assert (status.version, status.state) == (1, "AVAILABLE")


def test_remove_many_composites_each_photo_in_one_request(server):
    with BackgroundRemover(server, max_side=64) as remover:
        cutouts = remover.remove_many([_jpeg((300, 120)), _jpeg((40, 50))])
        on_white = remover.remove_many([_jpeg((30, 20))], background="white")
        assert remover.remove_many([]) == []
    assert [(c.mode, c.size) for c in cutouts] == [("RGBA", (300, 120)), ("RGBA", (40, 50))]
    assert [(c.mode, c.size) for c in on_white] == [("RGB", (30, 20))]


def test_metadata_lists_the_signatures(server):
    with BackgroundRemover(server) as remover:
        metadata = remover.metadata()
    assert (metadata["model"], metadata["version"]) == ("bgremover", 1)
    default = metadata["signatures"]["serving_default"]
    assert default["inputs"]["images"]["dtype"] == "DT_STRING"
    assert default["outputs"]["mask"]["dtype"] == "DT_UINT8"
    assert "predict_float" in metadata["signatures"]


@pytest.mark.parametrize(
    ("options", "named"), [({"model": "nosuchmodel"}, "nosuchmodel"), ({"version": 99}, "99")]
)
def test_unknown_model_or_version_is_reported_by_name(server, options, named):
    with (
        BackgroundRemover(server, **options) as remover,
        pytest.raises(ModelNotFound, match=named),
    ):
        remover.mask(_jpeg((16, 16)))


def _descriptor_line(path: Path) -> str:
    [line] = [x for x in path.read_text().splitlines() if "AddSerializedFile(" in x]
    return line


def test_generated_modules_are_fresh_and_accept_protobuf_5_29(tmp_path):
    # A subprocess: grpc_tools' bundled protoc crashes in a process that loaded TensorFlow.
    done = subprocess.run(
        [sys.executable, "-m", "serving.protos.generate", "--out-root", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    fresh = sorted((tmp_path / "serving" / "protos").glob("*_pb2.py"))
    committed = sorted((REPO / "serving" / "protos").glob("*_pb2.py"))
    protos = sorted((REPO / "serving" / "protos").glob("*.proto"))
    assert [p.name for p in fresh] == [p.name for p in committed]
    assert {p.name for p in fresh} == {p.stem + "_pb2.py" for p in protos}
    for new, old in zip(fresh, committed, strict=True):
        # The serialized descriptors must match; comments may differ between protoc versions.
        assert _descriptor_line(new) == _descriptor_line(old), f"{old.name}: run make protos"
        assert "Domain.PUBLIC,\n    5,\n    29,\n    0," in old.read_text()


def test_a_timed_out_metadata_call_fixes_no_size(server, monkeypatch):
    """A guess after one slow answer sent every later photo at 4x the pixels, and the
    same photo got another mask than from a fresh client."""
    with BackgroundRemover(server) as remover:
        answer = remover.metadata

        def slow_once():
            monkeypatch.setattr(remover, "metadata", answer)
            raise RequestFailed("did not answer", grpc.StatusCode.DEADLINE_EXCEEDED)

        monkeypatch.setattr(remover, "metadata", slow_once)
        with pytest.raises(RequestFailed, match="did not answer"):
            remover.mask(Image.new("RGB", (300, 200), "gray"))
        assert remover.send_side() == 256  # asked again, and told

        def unimplemented():
            raise RequestFailed("no metadata here", grpc.StatusCode.UNIMPLEMENTED)

        fresh = BackgroundRemover(server)
        monkeypatch.setattr(fresh, "metadata", unimplemented)
        assert fresh.send_side() == images.MAX_SIDE  # a server that never says: the default
        fresh.close()


@pytest.mark.parametrize(
    "failure",
    [
        RequestFailed("did not answer", grpc.StatusCode.DEADLINE_EXCEEDED),
        ServerUnavailable("cannot reach the model server"),  # each waited 30 s in turn
    ],
    ids=["timeout", "server-down"],
)
def test_threads_waiting_on_a_failing_metadata_call_fail_with_it(server, monkeypatch, failure):
    """Else each waited out a timeout of its own in turn: --jobs times as long."""
    calls, arrived = [], []

    def slow_failure():
        calls.append(1)
        deadline = time.monotonic() + 30
        while len(arrived) < 4 and time.monotonic() < deadline:  # all four asked
            time.sleep(0.01)
        time.sleep(0.2)  # and are waiting on the call in flight
        raise failure

    def photo_thread() -> int:
        arrived.append(1)
        return remover.send_side()

    with BackgroundRemover(server) as remover:
        monkeypatch.setattr(remover, "metadata", slow_failure)
        with futures.ThreadPoolExecutor(4) as pool:
            results = [pool.submit(photo_thread) for _ in range(4)]
            errors = [f.exception(timeout=30) for f in results]
        assert all(e is failure for e in errors) and len(calls) == 1
        with pytest.raises(type(failure)):
            remover.send_side()  # a later photo asks again
        assert len(calls) == 2


def test_after_an_outage_is_waited_out_calls_fail_fast_until_the_server_answers():
    """A web service calling a dead server waited the full reconnect window per request."""
    port = _free_port()
    first = _status_server(port)
    first.start()
    with BackgroundRemover(
        f"127.0.0.1:{port}", retries=1, backoff=0.1, reconnect_seconds=1.5
    ) as remover:
        remover.status()
        first.stop(0).wait()
        started = time.monotonic()
        with pytest.raises(ServerUnavailable):
            remover.status()
        assert time.monotonic() - started >= 1.5  # waited for a restart once
        attempts = []
        status_call = remover._get_status
        remover._get_status = lambda *a, **k: (attempts.append(1), status_call(*a, **k))[1]
        with pytest.raises(ServerUnavailable):
            remover.status()
        assert len(attempts) == 2  # not again: one call and its one retry
        remover._get_status = status_call
        again = _status_server(port)
        again.start()
        try:  # once gRPC's reconnect backoff (at most 2 s) lets the channel try again
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert remover.status() == [client_module.VersionStatus(4, "END")]
                    break
                except ServerUnavailable:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            assert remover._reached  # and a later outage is waited for again
        finally:
            again.stop(0)


def test_photos_are_sent_at_twice_the_models_side_known_before_the_first(server, monkeypatch):
    with BackgroundRemover(server) as remover:
        # From the model's metadata: 2 x 32 px model, raised to the floor.
        assert remover.send_side() == 256
        sent = []
        encode = images.encode_for_request

        def recording(photo, side):
            sent.append(side)
            return encode(photo, side)

        monkeypatch.setattr(images, "encode_for_request", recording)
        with futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(remover.mask, [Image.new("RGB", (3000, 2000), "gray")] * 4))
        assert sent == [256] * 4

    def no_metadata():
        raise RequestFailed("the server's metadata has no signature_def map")

    with BackgroundRemover(server) as silent:
        monkeypatch.setattr(silent, "metadata", no_metadata)
        assert silent.send_side() == 1024  # a server without metadata: the default side
    with BackgroundRemover(server, max_side=640) as fixed:
        fixed.mask(Image.new("RGB", (3000, 2000), "gray"))
        assert fixed.send_side() == 640


def test_many_photos_go_in_requests_a_batching_server_accepts(server, monkeypatch):
    with BackgroundRemover(server) as remover:
        sizes = []
        predict = remover._predict_masks

        def recording(encoded):
            sizes.append(len(encoded))
            return predict(encoded)

        monkeypatch.setattr(remover, "_predict_masks", recording)
        photos = [Image.new("RGB", (20 + n, 16), "gray") for n in range(20)]
        masks = remover.masks(photos)
    assert sizes == [8, 8, 4]
    assert [m.size for m in masks] == [p.size for p in photos]  # in order


def test_the_api_takes_arrays_and_buffers_and_refuses_the_rest_plainly(server):
    from serving.client import BackgroundRemoverError, InvalidImage

    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    remover = BackgroundRemover(server, max_side=64)
    with remover:
        assert remover.mask(pixels).size == (30, 20)
        assert remover.mask(bytearray(_jpeg((12, 8)))).size == (12, 8)
        assert remover.mask(memoryview(_jpeg((12, 8)))).size == (12, 8)
        with pytest.raises(InvalidImage, match="uint8"):
            remover.mask(pixels.astype(np.float32))
        with pytest.raises(TypeError, match="not NoneType"):
            remover.mask(None)
        with pytest.raises(TypeError, match="for one photo use remove"):
            remover.remove_many("photo.jpg")  # not a list of the letters p, h, o...
        # One except clause catches every failure the client means to report.
        with pytest.raises(BackgroundRemoverError, match="not a readable image"):
            remover.mask(b"not a photo")
        # Nothing to see, or a mode Pillow cannot convert: the same kind of error.
        for empty in (np.zeros((0, 5, 3), np.uint8), Image.new("RGB", (0, 0))):
            with pytest.raises(InvalidImage, match="an empty photo"):
                remover.mask(empty)
        with pytest.raises(InvalidImage, match="cannot read a La image"):
            remover.mask(Image.new("La", (2, 2)))  # premultiplied alpha
        # One bad photo among several is named by its place.
        missing = r"photo 1 \(/nowhere/x.jpg\): cannot read the file \(no such file"
        with pytest.raises(InvalidImage, match=missing):
            remover.remove_many([pixels, "/nowhere/x.jpg", pixels])
    with pytest.raises(BackgroundRemoverError, match="closed"):
        remover.mask(pixels)


def test_options_files_and_misuse_are_checked_before_any_request(server, monkeypatch):
    """Bad options failed after every photo had been sent, a NumPy feather crashed in
    Pillow, a file object was read from byte 0 whatever its position, and one file
    given to masks() was read line by line."""
    import pickle

    from serving.client import InvalidOption

    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    with BackgroundRemover(server, max_side=64) as remover:
        sent = []
        predict = remover._predict_masks
        monkeypatch.setattr(remover, "_predict_masks", lambda e: sent.append(e) or predict(e))
        for options in ({"threshold": 2}, {"feather": None}, {"background": None}):
            with pytest.raises(InvalidOption):
                remover.remove_many([pixels] * 3, **options)
        assert sent == []
        assert remover.remove(pixels, "white", np.float64(0.5), np.float32(3)).size == (30, 20)

        stream = io.BytesIO(b"HEADER" + _jpeg((12, 8)))
        stream.seek(6)
        assert remover.mask(stream).size == (12, 8)
        with pytest.raises(InvalidImage, match="binary mode"):
            remover.mask(io.StringIO("text"))
        with pytest.raises(TypeError, match="for one photo use mask"):
            remover.masks(io.BytesIO(_jpeg((12, 8))))
        with pytest.raises(TypeError, match="photo 2"):
            remover.masks([pixels, pixels, None])
        with pytest.raises(TypeError, match="create one in each process"):
            pickle.dumps(remover)


def test_a_channel_closed_under_a_call_is_the_clients_own_error(server):
    """close() racing a call let gRPC's ValueError through (1 in 640 calls)."""
    remover = BackgroundRemover(server)

    def closed_under_it(request, timeout):
        remover.close()
        raise ValueError("Cannot invoke RPC on closed channel!")

    with pytest.raises(BackgroundRemoverError, match="closed during the call"):
        remover._call(closed_under_it, None)


def test_closing_the_client_during_a_call_does_not_blame_the_server(server, monkeypatch):
    import threading
    from concurrent import futures

    from serving.client import BackgroundRemoverError
    from serving.model_store import ServedModel

    running, release = threading.Event(), threading.Event()
    predict = ServedModel.predict

    def held(self, *args):
        running.set()
        release.wait(30)
        return predict(self, *args)

    monkeypatch.setattr(ServedModel, "predict", held)
    remover = BackgroundRemover(server, max_side=64)
    try:
        call = futures.ThreadPoolExecutor(1).submit(remover.mask, _jpeg((12, 8)))
        assert running.wait(30)
        remover.close()
        with pytest.raises(BackgroundRemoverError, match="closed during the call") as error:
            call.result(30)
        assert "server" not in str(error.value)
    finally:
        release.set()


@pytest.mark.parametrize(
    "seconds, expected", [(None, None), (2.5, 2.5), (1e10, None), (float("inf"), None)]
)
def test_a_deadline_longer_than_grpc_can_express_is_no_deadline(seconds, expected):
    """gRPC failed a call with --timeout 1e10 or inf at once, as not answered in time."""
    assert client_module.grpc_timeout(seconds) == expected


@pytest.mark.parametrize("seconds", [0, -1, float("nan")])
def test_a_timeout_that_is_no_wait_at_all_is_refused(seconds):
    with pytest.raises(InvalidOption, match="positive number of seconds"):
        BackgroundRemover("127.0.0.1:1", timeout=seconds)


def test_an_endless_timeout_reaches_the_server(server):
    with BackgroundRemover(server, timeout=float("inf")) as remover:
        assert remover.status()[0].state == "AVAILABLE"


def test_a_deadline_passed_elsewhere_is_told_as_the_server_said_without_one_of_ours():
    """A proxy's or the server's own deadline: 'within infs' (or a TypeError for None)."""
    for timeout in (None, float("inf")):
        remover = BackgroundRemover("127.0.0.1:1", timeout=timeout)
        error = remover._readable(grpc.StatusCode.DEADLINE_EXCEEDED, "upstream gave up")
        assert "upstream gave up" in str(error) and "within" not in str(error)
        assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
        remover.close()
