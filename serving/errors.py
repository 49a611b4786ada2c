"""The client's one error base, apart so that photo loading can raise it too."""


class BackgroundRemoverError(RuntimeError):
    """Base class of every error the client raises on purpose."""


class InvalidOption(BackgroundRemoverError, ValueError):
    """A background, threshold or feather the client cannot use (a ValueError too)."""
