"""Configuration: the typed schema, named presets and the ``with`` command line."""
from vlkit.config.cli_with import ConfigError, resolve_config
from vlkit.config.schema import Config, defaults, loss_names

__all__ = ["Config", "ConfigError", "defaults", "loss_names", "resolve_config"]
