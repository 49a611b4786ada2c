"""Why a component stops a run, for the user to fix (data, settings, a rollout)."""


class PipelineStopped(RuntimeError):
    """Raised inside a component; the local runner prints it in one line, as a
    user error rather than a crash."""
