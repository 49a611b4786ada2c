"""Pipeline logs at INFO, so that the components' progress lines are seen."""

import logging
import os

from absl import logging as absl_logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# TFX's orchestration logs each component's inputs, outputs and settings as
# protos of 100-300 lines; folded, a run's log is its progress, not its plumbing.
MAX_TFX_LINES = 12
_TFX_PACKAGE = f"{os.sep}tfx{os.sep}"


class FoldTfxDumps(logging.Filter):
    """Cuts TFX's own long INFO messages to their first line and says how much."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or _TFX_PACKAGE not in record.pathname:
            return True
        try:
            lines = record.getMessage().splitlines()
        except (TypeError, ValueError):  # bad format arguments: logging reports those itself
            return True
        if len(lines) > MAX_TFX_LINES:
            first = lines[0] if len(lines[0]) <= 200 else lines[0][:200] + "…"
            record.msg = f"{first} [{len(lines) - 1} more lines: --verbose shows them]"
            record.args = None
        return True


def configure_logging(verbose: bool = False) -> None:
    """INFO on stderr, and kept there.

    ``force`` replaces the WARNING-level handler an imported library installs.
    absl's verbosity is set too: every SavedModel save silences absl and then
    restores absl's verbosity flag, which defaults to WARNING, so without it the
    trainer's last lines and everything after the Trainer would not show.
    """
    logging.basicConfig(level=logging.INFO, format=FORMAT, force=True)
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(FoldTfxDumps())
    absl_logging.set_verbosity(absl_logging.INFO)
