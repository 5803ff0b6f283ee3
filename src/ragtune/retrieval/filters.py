"""Metadata filters: `--where team=search --where year>=2024` on the command line, or LangChain's filter dict
(`{"team": "search", "year": {"$gte": 2024}}`, with `$and`/`$or`) in Python and HTTP. Both parse into one `Filter`,
compiled to a SQLite WHERE clause over the chunk table (`source`, `title` and `page` columns, the rest from the
`metadata` JSON), so the matching chunk ids are known before retrieval and every first stage cuts its top k from
them alone: a filtered query still returns k results when k exist.

A condition on a list field (`headings`) holds when any element satisfies it; `!=` and `$nin` hold when none
does. A number matches only numbers and a string only strings: `year>=2024` never compares against the text
"2024". A missing field fails every condition but `!=`, `$nin` and `$exists: false`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ragtune.errors import ConfigError

OPERATORS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<=", "$in": "in",
             "$nin": "not in", "$exists": "exists"}
WHERE = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(>=|<=|!=|=|>|<)\s*(.*?)\s*$")
CLI_OPS = {"=": "$eq", "!=": "$ne", ">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte"}
COLUMNS = ("id", "source", "title", "page")  # chunk fields that are table columns; every other name is metadata
FIX = ("write KEY=VALUE, KEY!=VALUE, KEY>=VALUE (or >, <, <=), e.g. --where team=search --where year>=2024, or a "
       "filter dict such as {\"team\": \"search\", \"year\": {\"$gte\": 2024}}")


def _json_path(field: str) -> str:
    return "$" + "".join(f'."{part}"' for part in field.split("."))  # quoted: keys may hold '-' or spaces


def _typed(value: Any) -> tuple[str, Any]:
    """(SQL test on a json_each row's type, the value to compare), so a number never matches text."""
    if isinstance(value, bool):
        return ("e.type = 'true'" if value else "e.type = 'false'"), None
    if isinstance(value, (int, float)):
        return "e.type IN ('integer', 'real')", value
    if isinstance(value, str):
        return "e.type = 'text'", value
    raise ConfigError(f"filter value {value!r}: only strings, numbers, booleans and null can be compared; {FIX}")


@dataclass(frozen=True)
class Condition:
    field: str
    op: str  # a key of OPERATORS
    value: Any

    def sql(self) -> tuple[str, list]:
        source, path = (f"json_quote({self.field})", "$") if self.field in COLUMNS else \
            ("metadata", _json_path(self.field))
        if self.op == "$exists":
            clause = f"json_type({source}, ?) IS NOT NULL AND json_type({source}, ?) != 'null'"
            return (clause if self.value else f"NOT ({clause})"), [path, path]
        if self.op in ("$ne", "$nin"):
            clause, params = Condition(self.field, "$eq" if self.op == "$ne" else "$in", self.value).sql()
            return f"NOT ({clause})", params
        values = self.value if self.op == "$in" else [self.value]
        if any(v is None for v in values):  # = null: missing, or null
            rest = [v for v in values if v is not None]
            clause = f"(json_type({source}, ?) IS NULL OR json_type({source}, ?) = 'null')"
            if not rest:
                return clause, [path, path]
            other, params = Condition(self.field, "$in", rest).sql()
            return f"({clause} OR {other})", [path, path, *params]
        tests, params = [], [path]
        operator = "=" if self.op == "$in" else OPERATORS[self.op]
        for value in values:
            kind, compared = _typed(value)
            tests.append(kind if compared is None else f"({kind} AND e.value {operator} ?)")
            params += [] if compared is None else [compared]
        return f"EXISTS (SELECT 1 FROM json_each({source}, ?) AS e WHERE {' OR '.join(tests)})", params


@dataclass(frozen=True)
class Filter:
    """All (`$and`) or any (`$or`) of conditions and nested filters."""

    mode: str  # "$and" or "$or"
    parts: tuple  # Condition | Filter

    def sql(self) -> tuple[str, list]:
        clauses, params = [], []
        for part in self.parts:
            clause, more = part.sql()
            clauses.append(f"({clause})")
            params += more
        joiner = " AND " if self.mode == "$and" else " OR "
        return (joiner.join(clauses) or ("1" if self.mode == "$and" else "0")), params

    def to_dict(self) -> dict:
        """The LangChain-style dict of this filter (for --json output and requests to a server)."""
        def one(part):
            return part.to_dict() if isinstance(part, Filter) else {part.field: {part.op: part.value}}

        return {self.mode: [one(p) for p in self.parts]}


def _condition(field: str, spec: Any, where: str) -> list[Condition]:
    if not isinstance(spec, dict):  # a bare value: equality, a list: any of them
        return [Condition(field, "$in" if isinstance(spec, list) else "$eq", spec)]
    if not spec:
        raise ConfigError(f"{where}: field '{field}' has an empty condition; {FIX}")
    out = []
    for op, value in spec.items():
        if op not in OPERATORS:
            from ragtune.choices import unknown

            raise ConfigError(f"{where}: {unknown('operator', op, OPERATORS)} (field '{field}')")
        if op in ("$in", "$nin") and not isinstance(value, list):
            raise ConfigError(f"{where}: '{op}' of field '{field}' takes a list, got {type(value).__name__}")
        if op == "$exists" and not isinstance(value, bool):
            raise ConfigError(f"{where}: '$exists' of field '{field}' takes true or false")
        if op in ("$gt", "$gte", "$lt", "$lte") and (value is None or isinstance(value, bool)):
            raise ConfigError(f"{where}: '{op}' of field '{field}' compares a number or a string, got {value!r}")
        for item in value if op in ("$in", "$nin") else [value]:
            if op != "$exists" and item is not None:
                _typed(item)  # a list or an object as a value fails here, naming it
        out.append(Condition(field, op, value))
    return out


def from_dict(spec: dict, where: str = "filter") -> Filter:
    """A Filter from LangChain's filter dict: {field: value | {op: value}}, `$and`/`$or` lists of such dicts."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: a filter is a dict of field -> value or {{operator: value}}, got "
                          f"{type(spec).__name__}; {FIX}")
    parts: list = []
    for key, value in spec.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{where}: '{key}' takes a non-empty list of filter dicts")
            parts.append(Filter(key, tuple(from_dict(v, where) for v in value)))
        elif key.startswith("$"):
            raise ConfigError(f"{where}: '{key}' is not a field, and only $and and $or may join conditions")
        else:
            parts += _condition(key, value, where)
    return Filter("$and", tuple(parts))


def from_where(conditions: list[str]) -> Filter:
    """A Filter from `--where` strings, all of which must hold. Values are read as YAML: 2024 is a number, true a
    boolean, null a missing value, [a, b] any of a or b; quote a number to compare it as text ("'2024'")."""
    import datetime

    import yaml

    parts: list = []
    for text in conditions:
        match = WHERE.match(text)
        if not match or not match.group(3):
            raise ConfigError(f"--where '{text}': not a condition; {FIX}")
        field, op, raw = match.groups()
        if raw[0] in "=<>!":
            raise ConfigError(f"--where '{text}': the value '{raw}' starts with an operator; write one operator "
                              f"(=, !=, >, >=, <, <=), or quote the value to compare that text")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (dict, datetime.date)):  # metadata holds dates as JSON strings: compare as text
            value = raw.strip("'\"")
        if isinstance(value, list):
            op = {"=": "$in", "!=": "$nin"}.get(op)
            if op is None:
                raise ConfigError(f"--where '{text}': a list works with = (any of) and != (none of) only")
            parts += _condition(field, {op: value}, f"--where '{text}'")
        else:
            parts += _condition(field, {CLI_OPS[op]: value}, f"--where '{text}'")
    return Filter("$and", tuple(parts))


def parse_filter(value: Any, where: str = "filter") -> Filter | None:
    """A Filter from whatever a caller has: None, a Filter, a filter dict, a JSON string of one, or --where
    strings."""
    if value is None or isinstance(value, Filter):
        return value
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.lstrip().startswith("{") else [value]
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not a JSON filter ({exc.msg}); {FIX}") from None
    if isinstance(value, (list, tuple)):
        return from_where(list(value)) if value else None
    return from_dict(value, where)


def matching_records(records, table_filter: Filter) -> frozenset[str]:
    """Ids of the (id, source, title, page, metadata) records that the filter keeps: a BEIR corpus, say, through
    the same SQL as an index's chunk table."""
    import sqlite3

    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE TABLE chunks (id TEXT, source TEXT, title TEXT, page INTEGER, metadata TEXT)")
        db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)",
                       ((i, s, t, p, json.dumps(m, default=str)) for i, s, t, p, m in records))
        return matching_ids(db, table_filter)
    finally:
        db.close()


def matching_ids(db, table_filter: Filter) -> frozenset[str]:
    """Ids of the chunks (rows of `db`'s `chunks` table) that the filter keeps."""
    clause, params = table_filter.sql()
    return frozenset(r[0] for r in db.execute(f"SELECT id FROM chunks WHERE {clause}", params))
