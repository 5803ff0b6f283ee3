"""Config schemas, loading, overrides and validation."""

from ragtune.config.load import apply_overrides, dump_config, load_config, validate_config
from ragtune.config.rerank import RerankConfig
from ragtune.config.schema import EmbedConfig, TaskConfig

__all__ = ["EmbedConfig", "RerankConfig", "TaskConfig", "apply_overrides", "dump_config", "load_config",
           "validate_config"]
