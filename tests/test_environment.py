"""The environment really has a working TFX stack, not just importable names."""

import importlib.metadata
import subprocess
import sys

import ml_metadata as mlmd
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from ml_metadata.proto import metadata_store_pb2


def test_versions_match_the_lock():
    assert importlib.metadata.version("tfx") == "1.21.0"
    assert tf.__version__.startswith("2.21")
    assert importlib.metadata.version("ml-metadata") == "1.21.0"
    assert tfdv.__version__.startswith("1.21")


def test_mlmd_sqlite_store_round_trip(tmp_path):
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(tmp_path / "metadata.sqlite")
    config.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    )
    store = mlmd.MetadataStore(config)
    model_type = metadata_store_pb2.ArtifactType(name="Model")
    model_type.properties["version"] = metadata_store_pb2.INT
    type_id = store.put_artifact_type(model_type)
    artifact = metadata_store_pb2.Artifact(type_id=type_id, uri="/models/bgremover/1")
    artifact.properties["version"].int_value = 7
    [artifact_id] = store.put_artifacts([artifact])

    reopened = mlmd.MetadataStore(config)
    [read] = reopened.get_artifacts_by_id([artifact_id])
    assert read.uri == "/models/bgremover/1"
    assert read.properties["version"].int_value == 7


def test_tfdv_computes_statistics():
    import pandas as pd

    stats = tfdv.generate_statistics_from_dataframe(pd.DataFrame({"fg": [0.1, 0.2, 0.3]}))
    feature = stats.datasets[0].features[0]
    assert stats.datasets[0].num_examples == 3
    assert abs(feature.num_stats.mean - 0.2) < 1e-6


def test_cli_entry_point_resolves():
    [entry] = [
        e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "bgremove"
    ]
    assert entry.value == "serving.cli:main"
    result = subprocess.run(
        [sys.executable, "-m", "serving.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "remove" in result.stdout


def _wrapped(command: str) -> subprocess.Popen:
    """``command`` (Python) run as env.sh runs bwrap: a stand-in parent of it (bwrap's
    part) under the script's run_forwarding_signals, with errexit as in env.sh."""
    import re
    from pathlib import Path

    env_sh = (Path(__file__).parents[1] / "scripts" / "env.sh").read_text()
    [function] = re.findall(r"^run_forwarding_signals\(\) \{.*?^\}$", env_sh, re.S | re.M)
    # bash -c stands in for bwrap: it dies of a stop signal it does not ignore.
    reset = "env --default-signal=INT,QUIT,TERM,HUP"
    stand_in = f'bash -c \'{reset} "$0" -c "$1"; exit $?\' {sys.executable} "$COMMAND"'
    return subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", f"{function}\nrun_forwarding_signals {stand_in}"],
        env={"PATH": "/usr/bin:/bin", "COMMAND": command},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's job
    )


@pytest.mark.parametrize("whole_group", [False, True], ids=["kill-wrapper", "pkill-f"])
def test_the_sandbox_wrapper_passes_a_stop_on_to_the_command(whole_group):
    """bwrap passes no signal on, and when it dies it kills the command at once: a
    TERM for the wrapper, or for all its processes (systemd, pkill -f), lets the
    command drain, and the wrapper exits with the command's status."""
    import os
    import signal

    wrapper = _wrapped(  # stops as the server does: the first signal sets a flag, and
        # the ones after it (the wrapper's copy of a TERM for the whole group) are ignored
        "import signal, sys, time\n"
        "stop = []\n"
        "def stopping(signum, frame):\n"
        "    signal.signal(signum, signal.SIG_IGN)\n"
        "    stop.append(1)\n"
        "signal.signal(signal.SIGTERM, stopping)\n"
        "print('ready', flush=True)\n"
        "while not stop:\n"
        "    time.sleep(0.05)\n"
        "print('drained', flush=True)\n"
        "sys.exit(3)\n"
    )
    try:
        assert wrapper.stdout.readline() == "ready\n"
        if whole_group:
            os.killpg(wrapper.pid, signal.SIGTERM)
        else:
            wrapper.send_signal(signal.SIGTERM)
        assert wrapper.stdout.readline() == "drained\n"
        assert wrapper.wait(timeout=30) == 3
    finally:
        wrapper.kill()


def test_ctrl_c_still_reaches_the_command_through_the_wrapper():
    """bash starts a background job with Ctrl-C ignored: make serve, make test and
    bgremove could not be interrupted in the sandbox."""
    import os
    import signal

    wrapper = _wrapped(
        "import time\n"
        "try:\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        "    raise SystemExit(4)\n"
    )
    try:
        assert wrapper.stdout.readline() == "ready\n"
        os.killpg(wrapper.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C
        assert wrapper.stdout.readline() == "interrupted\n"
        assert wrapper.wait(timeout=30) == 4
    finally:
        wrapper.kill()
