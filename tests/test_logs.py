"""The pipeline's own INFO lines reach the log even after TFX's imports."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import logging, tempfile
from absl import logging as absl_logging
from tfx_pipeline import local_runner  # imports TFX, Beam and TensorFlow first
from tfx_pipeline.logs import configure_logging
from components.export import export_saved_model
from components.unet import build_unet
configure_logging()
logging.getLogger("components.trainer_module").info("warm start line")
export_saved_model(build_unet(32, 32, filters=4, depth=2), tempfile.mkdtemp() + "/model")
absl_logging.info("after the export")  # a SavedModel save resets absl's level
"""


def test_info_lines_show_after_the_heavy_imports():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "INFO components.trainer_module: warm start line" in proc.stderr
    assert "INFO absl: after the export" in proc.stderr
