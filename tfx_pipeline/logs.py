"""Pipeline logs at INFO, so that the components' progress lines are seen."""

import logging

from absl import logging as absl_logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging() -> None:
    """INFO on stderr, and kept there.

    ``force`` replaces the WARNING-level handler an imported library installs.
    absl's verbosity is set too: every SavedModel save silences absl and then
    restores absl's verbosity flag, which defaults to WARNING, so without it the
    trainer's last lines and everything after the Trainer would not show.
    """
    logging.basicConfig(level=logging.INFO, format=FORMAT, force=True)
    absl_logging.set_verbosity(absl_logging.INFO)
