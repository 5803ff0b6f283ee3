"""Config schemas, loading, overrides and validation."""

from ragtune.config.load import apply_overrides, dump_config, load_config, validate_config
from ragtune.config.schema import TASKS, EmbedConfig, TaskConfig

__all__ = ["TASKS", "EmbedConfig", "TaskConfig", "apply_overrides", "dump_config", "load_config", "validate_config"]
