"""Read records from JSONL, JSON, CSV/TSV, Parquet and HF datasets saved on disk, keeping each row's location."""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ragtune.errors import DataError, missing_path
from ragtune.utils import decode_utf8

SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


@dataclass
class Row:
    """One record and where it came from, for error messages."""

    path: Path
    line: int | None  # 1-based line for text formats; None where lines mean nothing
    index: int  # 0-based position in the file
    data: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else f"{self.path} (row {self.index + 1})"

    def string(self, name: str, value: Any, fix: str = "fix the record") -> str:
        """`value`, the record's field `name`, when it is a string; else a DataError naming file, line and field."""
        if not isinstance(value, str):
            shown = "" if value is None else f" {value!r:.40}"
            raise DataError(f"{self.where}: field '{name}' must be a string, got {type(value).__name__}{shown}; {fix}")
        return value


def _base_suffix(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return suffixes[-1].lower() if suffixes else ""


def read_text(path: Path) -> str:
    """Read a (possibly gzipped) UTF-8 file; a bad byte becomes a DataError naming its line."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except OSError as exc:
            raise DataError(f"{path}: not a valid gzip file ({exc}); re-compress it or drop the .gz suffix") from None
    return decode_utf8(raw, lambda line: f"{path}:{line}")


def text_lines(text: str) -> list[str]:
    """Lines split at newlines only (a trailing CR dropped): str.splitlines would also split inside JSON strings
    at characters such as U+2028/U+2029, which json.dumps(ensure_ascii=False) writes unescaped."""
    lines = text.split("\n")
    if lines[-1] == "":  # the newline that ends the last line starts no new one
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _object_or_fail(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected a JSON object with named fields, got {type(value).__name__}; "
                        "write one object per record, e.g. {\"query\": ..., \"document\": ...}")
    return value


def _jsonl(path: Path) -> Iterator[Row]:
    index = 0
    for number, line in enumerate(text_lines(read_text(path)), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: malformed JSON ({exc.msg} at column {exc.colno}); "
                            "each line must be one complete JSON object") from None
        yield Row(path, number, index, _object_or_fail(value, f"{path}:{number}"))
        index += 1


def _json(path: Path) -> Iterator[Row]:
    text = read_text(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno}); fix the syntax "
                        "(for one object per line, name the file .jsonl)") from None
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
    if not isinstance(value, list):
        raise DataError(f"{path}: expected a JSON array of records, got {type(value).__name__}; "
                        "write [{...}, {...}] or use JSONL")
    for index, item in enumerate(value):
        yield Row(path, None, index, _object_or_fail(item, f"{path} (record {index + 1})"))


def _csv(path: Path) -> Iterator[Row]:
    delimiter = "\t" if _base_suffix(path) == ".tsv" else ","
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    if not reader.fieldnames:
        return
    index = 0
    try:
        for record in reader:
            if None in record:
                raise DataError(f"{path}:{reader.line_num}: more values than header columns; quote fields that "
                                f"contain '{delimiter}'")
            yield Row(path, reader.line_num, index, dict(record))
            index += 1
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc}); fix the quoting there") from None


def _parquet(path: Path) -> Iterator[Row]:
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow; run `pip install pyarrow`") from None
    except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
        raise DataError(f"{path}: not a readable Parquet file ({exc}); re-export it") from None
    for index, record in enumerate(table.to_pylist()):
        yield Row(path, None, index, record)


def _hf_on_disk(path: Path, split: str = "train") -> Iterator[Row]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError/ValueError/arrow errors for a bad folder
        raise DataError(f"{path}: not a readable saved HF dataset ({exc}); re-save it with save_to_disk") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"{path}: saved DatasetDict has no '{split}' split (it has {list(loaded)}); "
                            "save the split you want or name it 'train'")
        loaded = loaded[split]
    for index, record in enumerate(loaded):
        yield Row(path, None, index, record)


READERS = {".jsonl": _jsonl, ".json": _json, ".csv": _csv, ".tsv": _csv, ".parquet": _parquet}


def is_hf_dataset_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in ("dataset_info.json", "dataset_dict.json",
                                                                        "state.json"))


def data_files(path: str | Path) -> list[Path]:
    """The readable files behind `path`: the file itself, or every supported file in a folder."""
    path = Path(path)
    if not path.exists():
        raise missing_path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _base_suffix(p) in SUFFIXES)
        if not files:
            raise DataError(f"{path}: folder holds no {', '.join(SUFFIXES)} files")
        return files
    if _base_suffix(path) not in READERS:
        raise DataError(f"{path}: unsupported file type '{''.join(path.suffixes)}'; use one of {', '.join(SUFFIXES)}")
    return [path]


def read_rows(path: str | Path) -> list[Row]:
    """Every record under `path` (a file, a folder of files, or a saved HF dataset), in order."""
    path = Path(path)
    if is_hf_dataset_dir(path):
        rows = list(_hf_on_disk(path))
    else:
        rows = [row for file in data_files(path) for row in READERS[_base_suffix(file)](file)]
    if not rows:
        raise DataError(f"{path}: no records; the file is empty")
    return rows
