"""The pipeline's own INFO lines reach the log even after TFX's imports."""

import logging
import subprocess
import sys
from pathlib import Path

from tfx_pipeline.logs import FoldTfxDumps

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


def _record(pathname: str, message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("absl", level, pathname, 1, message, None, None)


def test_tfx_proto_dumps_are_folded_to_their_first_line():
    dump = "Running launcher for node_info {\n" + "  field: 1\n" * 120 + "}"
    tfx_file = "/env/site-packages/tfx/orchestration/portable/launcher.py"
    record = _record(tfx_file, dump)
    assert FoldTfxDumps().filter(record)
    assert record.getMessage() == (
        "Running launcher for node_info { [121 more lines: --verbose shows them]"
    )
    # The project's own messages, TFX's short ones and its warnings stay whole.
    for record in (
        _record(str(REPO / "components" / "trainer_module.py"), dump),
        _record(tfx_file, "Component Trainer is running.\nsecond line"),
        _record(tfx_file, dump, logging.WARNING),
    ):
        message = record.getMessage()
        FoldTfxDumps().filter(record)
        assert record.getMessage() == message
