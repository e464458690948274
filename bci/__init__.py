"""The application core: data, channels, preprocessing, configs, evaluation, the CLI."""

from .errors import BCIError, ConfigError, DataError, ModelError, StreamError

__version__ = "0.1.0"
__all__ = ["BCIError", "ConfigError", "DataError", "ModelError", "StreamError", "__version__"]
