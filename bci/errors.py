"""The one exception hierarchy of the application.

Every error a user can provoke (bad file, bad config, bad stream) is raised as a
subclass of :class:`BCIError` with a message that says what was expected and what
was found; the command line prints ``error: <message>`` and exits non-zero.
:class:`DataError` and :class:`ConfigError` are also ``ValueError``s, so scikit-learn's
checks (and any caller catching ``ValueError``) treat them as bad input.
"""


class BCIError(Exception):
    """Base class of every error the application raises on purpose."""


class DataError(BCIError, ValueError):
    """A recording, dataset or array is missing, corrupt or not what was expected."""


class ConfigError(BCIError, ValueError):
    """A configuration file or value is invalid."""


class StreamError(BCIError):
    """A live stream cannot be found, does not match, or failed."""


class ModelError(BCIError):
    """A model cannot be built, loaded or applied to the given input."""
