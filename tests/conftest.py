"""Fixtures shared by the client and CLI tests."""

import pytest

from tests.serving_fixtures import export_tiny_model, start_local_server


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """Address of a local server over a tiny exported model: one for the whole run."""
    serving_dir = tmp_path_factory.mktemp("models")
    export_tiny_model(serving_dir)
    local = start_local_server(serving_dir)
    yield local.address
    local.stop(grace=0)
