"""The rollout check against the real local server over gRPC."""

import pytest
import tensorflow as tf

from components.rollout_check import RolloutFailed, check_rollout
from serving import defaults
from tests.serving_fixtures import export_tiny_model, start_local_server


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    serving_dir = tmp_path_factory.mktemp("serving")
    export_tiny_model(serving_dir, version=1)
    server = start_local_server(serving_dir, max_versions=3)
    yield serving_dir, server
    server.stop(grace=0)


def _wrong_model(path):
    """Answers two masks whatever it is asked: a broken export."""

    class Wrong(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def serve(self, images):
            return {
                defaults.OUTPUT_MASK: tf.zeros([2, 8, 8], tf.uint8),
                defaults.OUTPUT_HEIGHT: tf.fill([2], 8),
                defaults.OUTPUT_WIDTH: tf.fill([2], 8),
            }

    module = Wrong()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def test_healthy_version_passes(served):
    serving_dir, server = served
    check_rollout(server.address, defaults.MODEL_NAME, 1, timeout_s=30)


def test_version_that_cannot_load_fails_clearly(served):
    serving_dir, server = served
    broken = serving_dir / defaults.MODEL_NAME / "5"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a model")
    with pytest.raises(RolloutFailed, match="version 5 .*failed to load"):
        check_rollout(server.address, defaults.MODEL_NAME, 5, timeout_s=30)


def test_version_that_answers_wrongly_fails_clearly(served):
    serving_dir, server = served
    _wrong_model(serving_dir / defaults.MODEL_NAME / "7")
    with pytest.raises(RolloutFailed, match="smoke Predict on version 7"):
        check_rollout(server.address, defaults.MODEL_NAME, 7, timeout_s=30)


def test_version_never_pushed_times_out(served):
    _, server = served
    with pytest.raises(RolloutFailed, match="not AVAILABLE .* within"):
        check_rollout(server.address, defaults.MODEL_NAME, 99, timeout_s=2)


def test_no_server_fails_with_the_address():
    with pytest.raises(RolloutFailed, match="127.0.0.1:9"):
        check_rollout("127.0.0.1:9", defaults.MODEL_NAME, 1, timeout_s=2)
