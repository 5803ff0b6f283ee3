"""Walk a config schema into rows of (dotted key, type, default, help) for `ragtune config show`."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not getattr(annotation, "__args__", None) else None
    return text or str(annotation).replace("typing.", "")


def option_rows(schema: type[BaseModel], prefix: str = "") -> list[dict[str, str]]:
    """Every option of `schema`, nested sections flattened to dotted keys."""
    rows = []
    instance = schema()
    for name, field in schema.model_fields.items():
        value = getattr(instance, name)
        if isinstance(value, BaseModel):
            rows.extend(option_rows(type(value), f"{prefix}{name}."))
            continue
        rows.append({
            "key": f"{prefix}{name}",
            "type": _type_name(field.annotation),
            "default": json.dumps(value) if not isinstance(value, str) else value,
            "help": field.description or "",
        })
    return rows
