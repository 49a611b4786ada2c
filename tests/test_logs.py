"""The pipeline's own INFO lines reach the log even after TFX's imports."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import logging
from tfx_pipeline import local_runner  # imports TFX, Beam and TensorFlow first
from tfx_pipeline.logs import configure_logging
configure_logging()
logging.getLogger("components.trainer_module").info("warm start line")
logging.getLogger("absl").info("absl line")
"""


def test_info_lines_show_after_the_heavy_imports():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "INFO components.trainer_module: warm start line" in proc.stderr
    assert "INFO absl: absl line" in proc.stderr
