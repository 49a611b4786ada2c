"""Pipeline logs at INFO, so that the components' progress lines are seen."""

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging() -> None:
    """INFO on stderr, replacing the WARNING-level handler an imported library installs.

    Without ``force`` the earlier handler wins silently and the trainer's own
    lines (warm start, time budget, export) never show.
    """
    logging.basicConfig(level=logging.INFO, format=FORMAT, force=True)
