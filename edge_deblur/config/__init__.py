"""Config schemas (dataclasses), YAML loading, key=value overrides and validation."""
from .core import (
    apply_overrides,
    from_dict,
    load_yaml,
    parse_override,
    suggest,
    to_dict,
)
from .schema import (
    BlurConfig,
    DataConfig,
    TrainConfig,
    TrainSection,
    load_train_config,
)
from .validation import ValSetConfig

__all__ = [
    "apply_overrides",
    "from_dict",
    "load_yaml",
    "parse_override",
    "suggest",
    "to_dict",
    "BlurConfig",
    "DataConfig",
    "TrainConfig",
    "TrainSection",
    "load_train_config",
    "ValSetConfig",
]
