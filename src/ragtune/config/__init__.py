"""Config schemas, loading, overrides and validation."""

from ragtune.config.load import apply_overrides, dump_config, load_config, validate_config
from ragtune.config.rerank import RerankConfig
from ragtune.config.schema import EmbedConfig, TaskConfig
from ragtune.config.tasks import TASKS

__all__ = ["TASKS", "EmbedConfig", "RerankConfig", "TaskConfig", "apply_overrides", "dump_config", "load_config",
           "validate_config"]
