"""Load a task config from YAML/JSON plus dotted `key=value` overrides, reporting every problem at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ValidationError

from ragtune.choices import did_you_mean
from ragtune.config.base import Section
from ragtune.config.schema import other_task
from ragtune.errors import ConfigError
from ragtune.utils import decode_utf8


def _key_lines(node: yaml.Node, prefix: str = "") -> dict[str, int]:
    """Map each dotted key of a YAML mapping to its 1-based line number."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key + "."))
    return lines


def read_config_file(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Read a YAML or JSON config file; return its mapping and the line of every dotted key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found; check the path{'' if path.suffix else ' (is it a .yaml file?)'}",
                          source=str(path))
    text = decode_utf8(path.read_bytes(), lambda line: f"{path}: line {line}", ConfigError)
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{at}invalid YAML ({problem}); fix the syntax there", source=str(path)) from None
    if data is None:
        raise ConfigError("the file is empty; write a mapping such as 'model: {name: ...}'", source=str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping of sections, not a {type(data).__name__}",
                          source=str(path))
    return data, _key_lines(node) if node is not None else {}


def recorded_task(path: str | Path) -> str | None:
    """The `task:` a config file names (a run's config.yaml does), or None."""
    named = read_config_file(path)[0].get("task")
    return named if isinstance(named, str) else None


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply dotted `a.b.c=value` overrides in place; values parse as YAML scalars."""
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(f"override '{item}' is not KEY=VALUE (e.g. train.learning_rate=3e-5)")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, dict) and not raw.lstrip().startswith("{"):
            value = raw  # "query: " is a prefix string, not a one-key mapping
        target = data
        *parents, leaf = key.split(".")
        for part in parents:
            child = target.get(part)
            if not isinstance(child, dict):
                child = {}
                target[part] = child
            target = child
        target[leaf] = value
    if problems:
        raise ConfigError(problems, source="command line")
    return data


# Keys that were renamed (so that every config calls a first stage `first_stage` and the number of candidates the
# reranker rescores `rerank_k`): an old config gets the new name instead of a bare "unknown key".
RENAMED = {"mode": "first_stage", "candidates": "rerank_k", "eval.rerank_top_k": "eval.rerank_k",
           "rerank.top_k": "rerank_k", "hard_negatives.retriever": "hard_negatives.first_stage",
           "retriever": "first_stage"}


def _renamed(dotted: str) -> str:
    for old, new in RENAMED.items():
        if dotted == old or dotted.endswith("." + old):
            return f" (renamed: write '{dotted[: len(dotted) - len(old)]}{new}')"
    return ""


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names valid at the parent of `loc`, for 'did you mean'."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    return list(getattr(current, "model_fields", {}))


def _problems(exc: ValidationError, model: type[BaseModel], lines: dict[str, int],
              overridden: set[str]) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        dotted = ".".join(loc) or "(top level)"
        at = ("command-line override: " if any(dotted == k or dotted.startswith(k + ".") for k in overridden)
              else f"line {lines[dotted]}: " if dotted in lines else "")
        if err["type"] == "extra_forbidden":
            hint = _renamed(dotted) or did_you_mean(loc[-1], _fields_at(model, loc))
            problems.append(f"{at}unknown key '{dotted}'{hint}")
            continue
        message = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
        problems.append(f"{at}{dotted}: {message}{shown}")
    return problems


def validate_config(task: str, data: dict[str, Any], source: str | None = None,
                    lines: dict[str, int] | None = None, overridden: Iterable[str] = ()) -> Section:
    """Validate a raw mapping against the task's schema; raise one ConfigError listing every problem. A top-level
    `task:` (as a run's config.yaml records it) must name this task."""
    from ragtune.tasks import task as find_task

    schema = find_task(task).config_class()
    if "task" in data and data["task"] != task:  # said here, with its line; TaskConfig checks it for other callers
        at = f"line {lines['task']}: " if lines and "task" in lines else ""
        raise ConfigError(f"{at}{other_task(data['task'], task)}", source=source)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, schema, lines or {}, set(overridden)), source=source) from None


def load_config(task: str, path: str | Path | None = None, overrides: Iterable[str] = ()) -> Section:
    """Load the config for `task` from an optional file plus overrides."""
    data, lines = read_config_file(path) if path else ({}, {})
    overrides = list(overrides)
    apply_overrides(data, overrides)
    keys = [item.partition("=")[0] for item in overrides]
    return validate_config(task, data, source=str(path) if path else None, lines=lines, overridden=keys)


def dump_config(config: Section) -> str:
    """The resolved config as YAML, every default written out; a task's config starts with its `task:`."""
    named = {"task": config.task} if getattr(config, "task", "") else {}
    return yaml.safe_dump({**named, **json.loads(config.model_dump_json())}, sort_keys=False, allow_unicode=True)
