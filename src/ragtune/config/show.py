"""Walk a config schema into rows of (dotted key, type, default, help) for `ragtune config show`."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not getattr(annotation, "__args__", None) else None
    return text or str(annotation).replace("typing.", "")


def option_rows(schema: type[BaseModel], prefix: str = "", instance: BaseModel | None = None) -> list[dict[str, str]]:
    """Every option of `schema`, nested sections flattened to dotted keys. Defaults come from the fields (or from
    `instance`, for a nested section), so that a config with a required key such as `model.name` can be shown."""
    rows = []
    for name, field in schema.model_fields.items():
        value = getattr(instance, name) if instance is not None else field.get_default(call_default_factory=True)
        if isinstance(value, BaseModel):
            rows.extend(option_rows(type(value), f"{prefix}{name}.", value))
            continue
        rows.append({
            "key": f"{prefix}{name}",
            "type": _type_name(field.annotation),
            "default": "(required)" if value is PydanticUndefined else
            value if isinstance(value, str) else json.dumps(value),
            "help": field.description or "",
        })
    return rows
