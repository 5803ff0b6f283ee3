"""The data layer: readers, format detection, column mapping, BEIR, splits, held-out IR, validation."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from ragtune.config.schema import DataSection
from ragtune.data.beir import IRData, is_beir_dir, load_beir, read_qrels
from ragtune.data.embed import (
    EmbedData,
    examples_from_ir,
    ir_from_examples,
    load_embed_data,
    sample_queries,
    split_by_query,
)
from ragtune.data.formats import Examples, detect_format, normalise
from ragtune.data.validate import validate_path
from ragtune.errors import ConfigError, DataError
from ragtune.ingest.readers import Row, data_files, is_hf_dataset_dir, read_rows
from tests.conftest import toy_pairs, write_jsonl

PAIRS = [{"query": "what is asthma", "document": "asthma is a lung disease"},
         {"query": "what is a stroke", "document": "a stroke cuts blood to the brain"},
         {"query": "why do bones break", "document": "low bone density makes fractures likely"}]


def _csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _row(data: dict, line: int = 1) -> Row:
    return Row(Path("f.jsonl"), line, line - 1, data)


def make_beir(root: Path, n: int = 12, n_test: int = 4) -> Path:
    """A tiny BEIR directory: query i is relevant to document i; the first n_test queries are the test split."""
    pairs = toy_pairs()[:n]
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "corpus.jsonl", [{"_id": f"d{i}", "title": "T" if i == 0 else "", "text": p["document"]}
                                        for i, p in enumerate(pairs)])
    write_jsonl(root / "queries.jsonl", [{"_id": f"q{i}", "text": p["query"]} for i, p in enumerate(pairs)])
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(n_test)))
    (root / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(n_test, n)))
    return root


# --------------------------------------------------------------------------------------------------- readers


def test_jsonl_rows_keep_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(PAIRS[0]) + "\n\n" + json.dumps(PAIRS[1]) + "\n", encoding="utf-8")
    rows = read_rows(path)
    assert [r.data for r in rows] == PAIRS[:2]
    assert [r.line for r in rows] == [1, 3] and [r.index for r in rows] == [0, 1]
    assert rows[1].where == f"{path}:3"


def test_jsonl_with_utf8_bom_and_unicode(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"query": "caf\u00e9 \u2615", "document": "d"}).encode() + b"\n")
    (row,) = read_rows(path)
    assert row.data["query"] == "caf\u00e9 \u2615"


def test_json_array_and_data_wrapper(tmp_path):
    array = tmp_path / "a.json"
    array.write_text(json.dumps(PAIRS), encoding="utf-8")
    rows = read_rows(array)
    assert [r.data for r in rows] == PAIRS and rows[0].line is None
    assert rows[2].where == f"{array} (row 3)"
    wrapped = tmp_path / "w.json"
    wrapped.write_text(json.dumps({"version": 1, "data": PAIRS}), encoding="utf-8")
    assert [r.data for r in read_rows(wrapped)] == PAIRS


def test_csv_and_tsv_lines_count_the_header(tmp_path):
    csv_path = _csv(tmp_path / "d.csv", PAIRS)
    tsv_path = _csv(tmp_path / "d.tsv", PAIRS, delimiter="\t")
    for path in (csv_path, tsv_path):
        rows = read_rows(path)
        assert [r.data for r in rows] == PAIRS
        assert [r.line for r in rows] == [2, 3, 4]


def test_csv_quoted_comma_and_newline(tmp_path):
    path = _csv(tmp_path / "q.csv", [{"query": "a, b", "document": "line one\nline two"},
                                     {"query": "c", "document": "d"}])
    rows = read_rows(path)
    assert rows[0].data == {"query": "a, b", "document": "line one\nline two"}
    assert rows[1].line == 4  # the quoted newline takes a line


def test_tsv_is_not_split_on_commas(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("query\tdocument\na, b\tc, d\n", encoding="utf-8")
    assert read_rows(path)[0].data == {"query": "a, b", "document": "c, d"}


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(PAIRS), path)
    rows = read_rows(path)
    assert [r.data for r in rows] == PAIRS
    assert rows[1].line is None and rows[1].where == f"{path} (row 2)"


def test_parquet_wrong_type_names_the_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "n.parquet"
    pq.write_table(pa.Table.from_pylist([{"query": "a", "document": "b"}, {"query": "c", "document": None}]), path)
    with pytest.raises(DataError, match=r"n\.parquet \(row 2\): missing field 'document'"):
        normalise(read_rows(path))


def test_hf_dataset_saved_to_disk(tmp_path):
    import datasets

    path = tmp_path / "hf"
    datasets.Dataset.from_list(PAIRS).save_to_disk(str(path))
    assert is_hf_dataset_dir(path)
    rows = read_rows(path)
    assert [r.data for r in rows] == PAIRS and rows[0].where == f"{path} (row 1)"
    assert normalise(rows).format == "pairs"


def test_hf_dataset_dict_uses_the_train_split(tmp_path):
    import datasets

    path = tmp_path / "hfd"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(PAIRS[:2]),
                          "test": datasets.Dataset.from_list(PAIRS[2:])}).save_to_disk(str(path))
    assert [r.data for r in read_rows(path)] == PAIRS[:2]

    other = tmp_path / "hf_no_train"
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(PAIRS)}).save_to_disk(str(other))
    with pytest.raises(DataError, match=r"no 'train' split.*validation"):
        read_rows(other)


def test_broken_hf_dataset_dir(tmp_path):
    path = tmp_path / "broken"
    path.mkdir()
    (path / "dataset_info.json").write_text("{}")
    with pytest.raises(DataError, match="not a readable saved HF dataset"):
        read_rows(path)


def test_folder_of_files_reads_every_supported_file_in_order(tmp_path):
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", PAIRS[:1])
    _csv(folder / "b.csv", PAIRS[1:2])
    (folder / "sub" / "c.json").write_text(json.dumps(PAIRS[2:]))
    (folder / "notes.txt").write_text("ignored")
    (folder / "README.md").write_text("ignored")
    files = data_files(folder)
    assert [f.name for f in files] == ["a.jsonl", "b.csv", "c.json"]
    rows = read_rows(folder)
    assert [r.data for r in rows] == PAIRS
    assert [r.path.name for r in rows] == ["a.jsonl", "b.csv", "c.json"]


def test_folder_without_data_files(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="folder holds no"):
        read_rows(tmp_path / "empty")


def test_gzipped_jsonl(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(p) + "\n" for p in PAIRS).encode()))
    rows = read_rows(path)
    assert [r.data for r in rows] == PAIRS and rows[2].where == f"{path}:3"
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "x.jsonl.gz").write_bytes(path.read_bytes())
    assert len(read_rows(folder)) == 3


@pytest.mark.parametrize("name, content, pattern", [
    ("m.jsonl", '{"query": "a", "document": "b"}\n{"query": "a",\n', r"m\.jsonl:2: malformed JSON"),
    ("e.jsonl", "", r"e\.jsonl: no records"),
    ("blank.jsonl", "\n  \n\n", r"blank\.jsonl: no records"),
    ("l.jsonl", "[1, 2]\n", r"l\.jsonl:1: expected a JSON object"),
    ("e.json", "", r"e\.json:1: malformed JSON"),
    ("o.json", '{"query": "a"}', r"o\.json: expected a JSON array"),
    ("r.json", "[1]", r"r\.json \(record 1\): expected a JSON object"),
    ("x.csv", "query,document\na,b,c\n", r"x\.csv:2: more values than header columns"),
    ("h.csv", "query,document\n", r"h\.csv: no records"),
    ("u.txt", "hello", r"u\.txt: unsupported file type '\.txt'"),
    ("g.jsonl.gz", "not gzip", r"g\.jsonl\.gz: not a valid gzip file"),
    ("p.parquet", "PAR1 not really", r"p\.parquet: not a readable Parquet file"),
])
def test_reader_errors_name_file_and_line(tmp_path, name, content, pattern):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=pattern):
        read_rows(path)


def test_non_utf8_names_the_line(tmp_path):
    for name in ("u.jsonl", "u.csv"):
        path = tmp_path / name
        header = b"query,document\n" if name.endswith(".csv") else b""
        path.write_bytes(header + b'{"query": "a", "document": "b"}\n' + b"\xff\xfe bad\n")
        with pytest.raises(DataError, match=rf"{name}:{3 if header else 2}: not UTF-8 \(byte 0xff\)"):
            read_rows(path)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file or folder"):
        read_rows(tmp_path / "nope.jsonl")


# ------------------------------------------------------------------------------------------ format detection


@pytest.mark.parametrize("data, fmt, mapping", [
    ({"query": "q", "document": "d"}, "pairs", {"anchor": "query", "positive": "document"}),
    ({"anchor": "q", "positive": "d"}, "pairs", {"anchor": "anchor", "positive": "positive"}),
    ({"question": "q", "answer": "d"}, "pairs", {"anchor": "question", "positive": "answer"}),
    ({"query": "q", "positive": "d"}, "pairs", {"anchor": "query", "positive": "positive"}),
    ({"query": "q", "positive": "p", "negative": "n"}, "triplets",
     {"anchor": "query", "positive": "positive", "negative": "negative"}),
    ({"anchor": "q", "positive": "p", "negative": "n"}, "triplets",
     {"anchor": "anchor", "positive": "positive", "negative": "negative"}),
    ({"query": "q", "positive": "p", "negatives": ["n"]}, "triplets",
     {"anchor": "query", "positive": "positive", "negatives": "negatives"}),
    ({"sentence1": "a", "sentence2": "b", "score": 0.5}, "scored_pairs",
     {"sentence1": "sentence1", "sentence2": "sentence2", "score": "score"}),
    ({"doc1": "a", "doc2": "b", "similarity": 0.5}, "scored_pairs",
     {"sentence1": "doc1", "sentence2": "doc2", "score": "similarity"}),
])
def test_detect_format_spellings(data, fmt, mapping):
    assert detect_format(_row({**data, "id": 7}), {}) == (fmt, mapping)


def test_detect_format_unknown_fields_names_them():
    with pytest.raises(DataError, match=r"f\.jsonl:1: cannot tell the format from fields \['a', 'b'\]"):
        detect_format(_row({"a": "x", "b": "y"}), {})


def test_pairs_normalise_to_anchor_positive():
    ex = normalise([_row(p, i + 1) for i, p in enumerate(PAIRS)])
    assert ex.format == "pairs" and ex.columns == ["anchor", "positive"]
    assert ex.rows[0] == {"anchor": PAIRS[0]["query"], "positive": PAIRS[0]["document"]}
    assert ex.origins == ["f.jsonl:1", "f.jsonl:2", "f.jsonl:3"] and ex.warnings == []


def test_single_negative_triplets():
    ex = normalise([_row({"anchor": "q", "positive": "p", "negative": "n"})])
    assert ex.format == "triplets" and ex.columns == ["anchor", "positive", "negative_1"]
    assert ex.rows == [{"anchor": "q", "positive": "p", "negative_1": "n"}]


def test_negatives_list_makes_n_tuples():
    rows = [_row({"query": f"q{i}", "positive": f"p{i}", "negatives": [f"n{i}a", f"n{i}b", f"n{i}c"]}, i + 1)
            for i in range(2)]
    ex = normalise(rows)
    assert ex.format == "triplets" and ex.columns == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    assert ex.rows[1] == {"anchor": "q1", "positive": "p1", "negative_1": "n1a", "negative_2": "n1b",
                          "negative_3": "n1c"}


def test_ragged_negatives_name_the_row():
    rows = [_row({"query": "a", "positive": "b", "negatives": ["c", "d"]}, 1),
            _row({"query": "e", "positive": "f", "negatives": ["g"]}, 2)]
    with pytest.raises(DataError, match=r"f\.jsonl:2: field 'negatives' has 1 negatives but earlier rows have 2"):
        normalise(rows)


@pytest.mark.parametrize("negatives", ["one string", [], None])
def test_negatives_must_be_a_non_empty_list(negatives):
    with pytest.raises(DataError, match=r"f\.jsonl:1: (field 'negatives' must be a non-empty list|missing field)"):
        normalise([_row({"query": "a", "positive": "b", "negatives": negatives})])


def test_scored_pairs_scores_become_floats():
    ex = normalise([_row({"sentence1": "a", "sentence2": "b", "score": 1}, 1),
                    _row({"sentence1": "c", "sentence2": "d", "score": "0.25"}, 2),
                    _row({"sentence1": "e", "sentence2": "f", "score": 0}, 3)])
    assert ex.format == "scored_pairs" and ex.columns == ["sentence1", "sentence2", "score"]
    assert [r["score"] for r in ex.rows] == [1.0, 0.25, 0.0]
    assert all(isinstance(r["score"], float) for r in ex.rows)


def test_doc1_doc2_similarity():
    ex = normalise([_row({"doc1": "a", "doc2": "b", "similarity": 0.9})])
    assert ex.rows == [{"sentence1": "a", "sentence2": "b", "score": 0.9}]


@pytest.mark.parametrize("score, message", [
    (1.5, r"field 'score' is 1.5, outside \[0, 1\]"), (-0.1, r"field 'score' is -0.1, outside \[0, 1\]"),
    ("high", r"field 'score' must be a number in \[0, 1\], got 'high'"),
    (True, r"field 'score' must be a number"), ([0.5], r"field 'score' must be a number"),
    (float("nan"), r"field 'score' is nan, outside"),
])
def test_bad_scores_name_row_and_field(score, message):
    rows = [_row({"sentence1": "a", "sentence2": "b", "score": 0.5}, 1),
            _row({"sentence1": "c", "sentence2": "d", "score": score}, 2)]
    with pytest.raises(DataError, match=r"f\.jsonl:2: " + message):
        normalise(rows)


@pytest.mark.parametrize("value", [5, 1.5, ["a"], {"t": "x"}, True])
def test_non_string_text_names_row_and_field(value):
    with pytest.raises(DataError, match=r"f\.jsonl:2: field 'document' must be a string"):
        normalise([_row({"query": "a", "document": "b"}, 1), _row({"query": "c", "document": value}, 2)])


def test_missing_or_null_field_names_row_and_field():
    for bad in ({"query": "c"}, {"query": "c", "document": None}):
        with pytest.raises(DataError, match=r"f\.jsonl:2: missing field 'document' \(pairs need"):
            normalise([_row({"query": "a", "document": "b"}, 1), _row(bad, 2)])


def test_empty_texts_are_skipped_with_a_warning():
    ex = normalise([_row({"query": "a", "document": "b"}, 1), _row({"query": "  ", "document": "x"}, 2),
                    _row({"query": "q", "positive": "p", "document": ""}, 3)])
    assert ex.rows == [{"anchor": "a", "positive": "b"}] and ex.origins == ["f.jsonl:1"]
    assert ex.warnings[0].startswith("f.jsonl:2: empty text in ['anchor']")
    assert ex.warnings[1].startswith("f.jsonl:3: empty text in ['positive']")


def test_all_empty_texts_is_an_error():
    with pytest.raises(DataError, match="every record has an empty text"):
        normalise([_row({"query": "", "document": "x"})])


def test_format_pairs_keeps_the_first_two_columns_of_triplets():
    ex = normalise([_row({"query": "q", "positive": "p", "negatives": ["n1", "n2"]})], fmt="pairs")
    assert ex.format == "pairs" and ex.rows == [{"anchor": "q", "positive": "p"}]


def test_forced_format_that_does_not_match():
    with pytest.raises(DataError, match=r"f\.jsonl:1: data.format is 'scored_pairs' but .* are pairs"):
        normalise([_row({"query": "q", "document": "d"})], fmt="scored_pairs")


# ------------------------------------------------------------------------------------------------ data.columns


def test_columns_map_custom_fields_to_roles():
    rows = [_row({"title": "t", "body": "b", "extra": 1})]
    ex = normalise(rows, columns={"anchor": "title", "positive": "body"})
    assert ex.format == "pairs" and ex.rows == [{"anchor": "t", "positive": "b"}]


def test_columns_map_scored_pairs_and_triplets():
    ex = normalise([_row({"left": "a", "right": "b", "label": 1})],
                   columns={"sentence1": "left", "sentence2": "right", "score": "label"})
    assert ex.format == "scored_pairs" and ex.rows == [{"sentence1": "a", "sentence2": "b", "score": 1.0}]
    ex = normalise([_row({"q": "a", "pos": "b", "hard": ["c", "d"]})],
                   columns={"anchor": "q", "positive": "pos", "negatives": "hard"})
    assert ex.format == "triplets" and ex.rows == [{"anchor": "a", "positive": "b", "negative_1": "c",
                                                    "negative_2": "d"}]


def test_partial_column_mapping_keeps_the_other_defaults():
    ex = normalise([_row({"title": "t", "document": "d"})], columns={"anchor": "title"})
    assert ex.format == "pairs" and ex.rows == [{"anchor": "t", "positive": "d"}]


def test_column_mapping_to_an_absent_field_fails_clearly():
    with pytest.raises(DataError, match="cannot tell the format"):
        normalise([_row({"query": "q", "document": "d"})], columns={"anchor": "title"})


def test_unknown_column_role():
    with pytest.raises(DataError, match=r"data.columns: unknown role 'anchr' \(did you mean 'anchor'\?\)"):
        normalise([_row({"query": "q", "document": "d"})], columns={"anchr": "query"})


def test_columns_through_the_data_section(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"title": f"t{i}", "body": f"b{i}"} for i in range(10)])
    data = load_embed_data(DataSection(train=str(path), columns={"anchor": "title", "positive": "body"}))
    assert data.train.format == "pairs" and data.train.rows[0].keys() == {"anchor", "positive"}


# ------------------------------------------------------------------------------------------------------- BEIR


def test_load_beir(tmp_path):
    root = make_beir(tmp_path / "b")
    assert is_beir_dir(root) and not is_beir_dir(tmp_path)
    ir = load_beir(root, "test")
    assert isinstance(ir, IRData) and ir.name == "b/test"
    assert len(ir.corpus) == 12 and set(ir.queries) == {"q0", "q1", "q2", "q3"}
    assert ir.qrels == {f"q{i}": {f"d{i}": 1} for i in range(4)}
    assert ir.corpus["d0"].startswith("T ")  # the title is prepended
    assert not ir.corpus["d1"].startswith(" ")
    assert set(load_beir(root, "train").queries) == {f"q{i}" for i in range(4, 12)}


def test_qrels_formats(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text("q1\td1\t2\nq1 d2 0\nq2\t0\td3\t1\n\n")  # no header, spaces, TREC 4 columns, blank line
    assert read_qrels(path) == {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}


@pytest.mark.parametrize("text, pattern", [
    ("query-id\tcorpus-id\tscore\nq1\td1\n", r"q\.tsv:2: expected 3 tab-separated columns .* got 2"),
    ("q1\td1\t1\tx\ty\n", r"q\.tsv:1: expected 3 tab-separated columns .* got 5"),
    ("q1\td1\thigh\n", r"q\.tsv:1: field 'score' must be an integer, got 'high'"),
    ("", r"q\.tsv: no judgements"),
    ("query-id\tcorpus-id\tscore\n", r"q\.tsv: no judgements"),
])
def test_bad_qrels_name_file_and_line(tmp_path, text, pattern):
    path = tmp_path / "q.tsv"
    path.write_text(text)
    with pytest.raises(DataError, match=pattern):
        read_qrels(path)


def test_qrels_trailing_tab_is_tolerated(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text("q1\td1\t1\t\n")
    assert read_qrels(path) == {"q1": {"d1": 1}}


def test_missing_split_lists_the_others(tmp_path):
    root = make_beir(tmp_path / "b")
    with pytest.raises(DataError, match=r"dev\.tsv: no such qrels file; this collection has splits \['test', 'train'\]"):
        load_beir(root, "dev")


def test_beir_records_need_id_and_text(tmp_path):
    root = make_beir(tmp_path / "b")
    (root / "corpus.jsonl").write_text('{"_id": "d0", "text": "x"}\n{"_id": "d1"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: missing field 'text'"):
        load_beir(root, "test")
    root = make_beir(tmp_path / "c")
    (root / "queries.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(DataError, match=r"queries\.jsonl:1: missing field '_id'"):
        load_beir(root, "test")


def test_beir_numeric_ids_are_strings(tmp_path):
    root = tmp_path / "n"
    (root / "qrels").mkdir(parents=True)
    write_jsonl(root / "corpus.jsonl", [{"_id": 1, "text": "a"}, {"_id": 2, "text": "b"}])
    write_jsonl(root / "queries.jsonl", [{"_id": 10, "text": "q"}])
    (root / "qrels" / "test.tsv").write_text("10\t2\t1\n")
    assert load_beir(root, "test").qrels == {"10": {"2": 1}}


def test_beir_number_for_text_is_rejected(tmp_path):
    root = make_beir(tmp_path / "b")
    (root / "corpus.jsonl").write_text('{"_id": "d0", "text": 5}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:1: field 'text' must be a string"):
        load_beir(root, "test")


def test_beir_title_must_be_text(tmp_path):
    root = make_beir(tmp_path / "b")
    (root / "corpus.jsonl").write_text('{"_id": "d0", "text": "x", "title": 3}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:1: field 'title' must be a string"):
        load_beir(root, "test")


def test_qrels_query_missing_from_queries(tmp_path):
    root = make_beir(tmp_path / "b")
    with (root / "qrels" / "test.tsv").open("a") as handle:
        handle.write("q99\td0\t1\n")
    with pytest.raises(DataError, match=r"qrels/test\.tsv: 1 unknown query ids \(first: 'q99', not in queries\.jsonl\)"
                                        r".*--unknown-ids skip"):
        load_beir(root, "test")
    assert "q99" not in load_beir(root, "test", unknown_ids="skip").qrels


def test_judgements_of_unknown_documents_are_counted_then_rejected_or_skipped(tmp_path, caplog):
    root = make_beir(tmp_path / "b")
    with (root / "qrels" / "test.tsv").open("a") as handle:
        handle.write("q0\td99\t1\nq1\td98\t1\n")
    with pytest.raises(DataError, match=r"2 judgements of unknown document ids \(first: 'd99'"):
        load_beir(root, "test")
    assert load_beir(root, "test", unknown_ids="skip").qrels["q0"] == {"d0": 1}
    assert "2 judgements of unknown document ids" in caplog.text and "skipped" in caplog.text


def test_not_a_beir_dir(tmp_path):
    with pytest.raises(DataError, match="not a BEIR directory"):
        load_beir(tmp_path, "test")


def test_examples_from_ir_keeps_positive_judgements(tmp_path):
    root = make_beir(tmp_path / "b")
    (root / "qrels" / "train.tsv").write_text("q4\td4\t1\nq5\td5\t0\n")
    ex = examples_from_ir(load_beir(root, "train"))
    assert ex.format == "pairs" and len(ex.rows) == 1
    assert ex.rows[0] == {"anchor": toy_pairs()[4]["query"], "positive": toy_pairs()[4]["document"]}


# ------------------------------------------------------------------------------------------ splits and held-out


def _examples(n_queries: int, per_query: int = 2, fmt: str = "pairs") -> Examples:
    rows, origins = [], []
    for q in range(n_queries):
        for j in range(per_query):
            if fmt == "scored_pairs":
                rows.append({"sentence1": f"q{q}", "sentence2": f"doc {q} {j}", "score": 1.0 if j == 0 else 0.0})
            else:
                rows.append({"anchor": f"q{q}", "positive": f"doc {q} {j}"})
            origins.append(f"f.jsonl:{len(rows)}")
    columns = list(rows[0])
    return Examples(fmt, columns, rows, origins)


def test_split_by_query_is_seeded_and_disjoint():
    ex = _examples(20)
    train, held = split_by_query(ex, 0.25, seed=7)
    again_train, again_held = split_by_query(ex, 0.25, seed=7)
    assert train.rows == again_train.rows and held.rows == again_held.rows
    train_q, held_q = {r["anchor"] for r in train.rows}, {r["anchor"] for r in held.rows}
    assert not train_q & held_q and len(held_q) == 5 and len(train_q) == 15
    assert len(train.rows) + len(held.rows) == len(ex.rows)
    assert all(r["anchor"] in held_q for r in held.rows)  # every row of a held-out query goes with it
    assert sorted(train.origins + held.origins) == sorted(ex.origins)
    assert any({r["anchor"] for r in split_by_query(ex, 0.25, seed=s)[1].rows} != held_q for s in range(1, 6))


def test_a_held_out_split_too_small_to_judge_a_run_is_said_first(tmp_path):
    from ragtune.data.embed import FEW_HELD_OUT, load_embed_data

    few = load_embed_data(DataSection(train=str(write_jsonl(tmp_path / "few.jsonl", toy_pairs()))))
    assert len(few.eval.queries) < FEW_HELD_OUT
    assert few.train.warnings[0].startswith(f"the held-out split has only {len(few.eval.queries)} queries")
    rows = [{"query": f"question {i} about topic {i}", "document": f"passage {i} on topic {i}"} for i in range(600)]
    enough = load_embed_data(DataSection(train=str(write_jsonl(tmp_path / "enough.jsonl", rows))))
    assert len(enough.eval.queries) == 60 and not enough.train.warnings


def test_split_by_query_holds_out_at_least_one_and_uses_sentence1():
    train, held = split_by_query(_examples(3, fmt="scored_pairs"), 0.01, seed=0)
    assert len({r["sentence1"] for r in held.rows}) == 1 and held.format == "scored_pairs"
    assert not {r["sentence1"] for r in train.rows} & {r["sentence1"] for r in held.rows}


def test_split_by_query_needs_two_queries():
    with pytest.raises(DataError, match=r"f\.jsonl:1: only 1 distinct query"):
        split_by_query(_examples(1, per_query=5), 0.5, seed=0)


def test_ir_from_examples_pairs():
    train = Examples("pairs", ["anchor", "positive"], [{"anchor": "a", "positive": "A"}], ["f:1"])
    held = Examples("pairs", ["anchor", "positive"], [{"anchor": "b", "positive": "B"},
                                                      {"anchor": "b", "positive": "B2"},
                                                      {"anchor": "c", "positive": "C"}], ["f:2", "f:3", "f:4"])
    ir = ir_from_examples(held, [train, held])
    assert sorted(ir.corpus.values()) == ["A", "B", "B2", "C"]  # train documents are distractors
    assert sorted(ir.queries.values()) == ["b", "c"]
    by_text = {ir.queries[q]: {ir.corpus[d] for d in docs} for q, docs in ir.qrels.items()}
    assert by_text == {"b": {"B", "B2"}, "c": {"C"}}
    assert all(s == 1 for docs in ir.qrels.values() for s in docs.values())


def test_ir_from_examples_triplet_negatives_are_documents():
    held = Examples("triplets", ["anchor", "positive", "negative_1"],
                    [{"anchor": "q", "positive": "P", "negative_1": "N"}], ["f:1"])
    ir = ir_from_examples(held, [held])
    assert set(ir.corpus.values()) == {"P", "N"}
    (docs,) = ir.qrels.values()
    assert [ir.corpus[d] for d in docs] == ["P"]


def test_ir_from_examples_scored_pairs_use_the_threshold():
    held = Examples("scored_pairs", ["sentence1", "sentence2", "score"],
                    [{"sentence1": "q1", "sentence2": "yes", "score": 0.9},
                     {"sentence1": "q1", "sentence2": "no", "score": 0.1},
                     {"sentence1": "q2", "sentence2": "never", "score": 0.2}], ["f:1", "f:2", "f:3"])
    ir = ir_from_examples(held, [held])
    assert list(ir.queries.values()) == ["q1"]
    assert [ir.corpus[d] for d in next(iter(ir.qrels.values()))] == ["yes"]
    assert set(ir.corpus.values()) == {"yes", "no", "never"}
    low = Examples("scored_pairs", held.columns, held.rows[1:], held.origins[1:])
    with pytest.raises(DataError, match=r"^f: no held-out pair is relevant"):
        ir_from_examples(low, [low])


def test_sample_queries_is_seeded():
    ir = IRData({"d": "x"}, {f"q{i}": "x" for i in range(10)}, {f"q{i}": {"d": 1} for i in range(10)})
    a, b = sample_queries(ir, 3, 1), sample_queries(ir, 3, 1)
    assert len(a.queries) == 3 and a.qrels == b.qrels and set(a.qrels) == set(a.queries)
    assert sample_queries(ir, None, 1) is ir and sample_queries(ir, 50, 1) is ir


# ------------------------------------------------------------------------------------------------ load_embed_data


def test_load_embed_data_splits_a_single_file(pairs_file):
    data = load_embed_data(DataSection(train=str(pairs_file), eval_fraction=0.25), seed=3)
    assert isinstance(data, EmbedData) and data.train.format == "pairs"
    train_queries = {r["anchor"] for r in data.train.rows}
    assert not train_queries & set(data.eval.queries.values())
    assert len(data.eval.queries) == round(len(toy_pairs()) * 0.25)
    assert len(data.train.rows) + len(data.eval.queries) == len(toy_pairs())
    assert set(data.eval.corpus.values()) == {p["document"] for p in toy_pairs()}
    again = load_embed_data(DataSection(train=str(pairs_file), eval_fraction=0.25), seed=3)
    assert again.train.rows == data.train.rows and again.eval.qrels == data.eval.qrels


def test_load_embed_data_with_an_eval_file(tmp_path):
    pairs = toy_pairs()
    train = write_jsonl(tmp_path / "train.jsonl", pairs[:40])
    held = _csv(tmp_path / "eval.csv", pairs[40:])
    data = load_embed_data(DataSection(train=str(train), eval=str(held)))
    assert len(data.train.rows) == 40 and len(data.eval.queries) == len(pairs) - 40
    assert len(data.eval.corpus) == len({p["document"] for p in pairs})


def test_load_embed_data_beir(tmp_path):
    root = make_beir(tmp_path / "b")
    data = load_embed_data(DataSection(train=str(root)))
    assert data.train.format == "pairs" and len(data.train.rows) == 8
    assert set(data.eval.queries) == {"q0", "q1", "q2", "q3"} and data.eval.name == "b/test"
    forced = load_embed_data(DataSection(train=str(root), format="beir", train_split="test", eval_split="train"))
    assert len(forced.train.rows) == 4 and len(forced.eval.queries) == 8


def test_load_embed_data_beir_drops_training_pairs_of_held_out_queries(tmp_path):
    root = make_beir(tmp_path / "b")
    (root / "qrels" / "train.tsv").write_text("q0\td0\t1\nq5\td5\t1\n")
    data = load_embed_data(DataSection(train=str(root)))
    held = set(data.eval.queries.values())
    assert len(data.train.rows) == 1 and all(r["anchor"] not in held for r in data.train.rows)
    assert any("1 training pairs whose query text is also a test query were dropped" in w
               for w in data.train.warnings)


def test_load_embed_data_caps(pairs_file):
    data = load_embed_data(DataSection(train=str(pairs_file), max_train_samples=5, max_eval_queries=2,
                                       eval_fraction=0.5))
    assert len(data.train.rows) == len(data.train.origins) == 5 and len(data.eval.queries) == 2


def test_load_embed_data_without_train():
    with pytest.raises(ConfigError, match="data.train is not set"):
        load_embed_data(DataSection())


def test_load_embed_data_triplets_and_scored_pairs(tmp_path):
    triplets = write_jsonl(tmp_path / "t.jsonl", [{"query": f"q{i}", "positive": f"p{i}", "negatives": [f"n{i}"]}
                                                  for i in range(10)])
    data = load_embed_data(DataSection(train=str(triplets), eval_fraction=0.2))
    assert data.train.format == "triplets" and data.train.columns == ["anchor", "positive", "negative_1"]
    assert len(data.eval.corpus) == 20
    scored = write_jsonl(tmp_path / "s.jsonl", [{"sentence1": f"q{i}", "sentence2": f"d{i}", "score": 1.0}
                                                for i in range(10)])
    data = load_embed_data(DataSection(train=str(scored), eval_fraction=0.2))
    assert data.train.format == "scored_pairs" and len(data.eval.queries) == 2


# ------------------------------------------------------------------------------------------------ validate_path


def test_validate_report_counts_duplicates_empty_and_lengths(tmp_path):
    rows = [{"query": "one two", "document": "a b c d"},
            {"query": "three", "document": "e"},
            {"query": "one two", "document": "a b c d"},  # duplicate of line 1
            {"query": "", "document": "x"},  # empty
            {"query": "four five six", "document": "f g"},
            {"query": "one two", "document": "a b c d"}]  # second duplicate of line 1
    path = write_jsonl(tmp_path / "v.jsonl", rows)
    report = validate_path(path)
    assert report.path == str(path) and report.format == "pairs"
    assert report.counts == {"records": 6, "usable": 5, "duplicates": 2, "empty": 1, "distinct queries": 3}
    assert f"{path}:3: duplicate of {path}:1" in report.problems
    assert f"{path}:6: duplicate of {path}:1" in report.problems
    assert any(p.startswith(f"{path}:4: empty text in ['anchor']") for p in report.problems)
    assert report.lengths["anchor"] == {"min": 1, "mean": 2.0, "p95": 2, "max": 3}  # p95 of [1, 2, 2, 2, 3]
    assert report.lengths["positive"]["min"] == 1 and report.lengths["positive"]["max"] == 4
    assert report.lengths["positive"]["mean"] == round((4 + 1 + 4 + 2 + 4) / 5, 1)


def test_validate_clean_file_has_no_problems(pairs_file):
    report = validate_path(pairs_file)
    assert report.problems == [] and report.counts["duplicates"] == 0
    assert report.counts["records"] == report.counts["usable"] == len(toy_pairs())


def test_validate_scored_pairs_skips_the_score_column(tmp_path):
    path = _csv(tmp_path / "s.csv", [{"sentence1": "a b", "sentence2": "c", "score": "0.5"},
                                     {"sentence1": "d", "sentence2": "e f g", "score": "1"}])
    report = validate_path(path)
    assert report.format == "scored_pairs" and set(report.lengths) == {"sentence1", "sentence2"}
    assert report.lengths["sentence2"]["max"] == 3


def test_validate_triplets_and_forced_format(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"query": "q", "positive": "p", "negatives": ["n1 n2", "n3"]}])
    report = validate_path(path)
    assert report.format == "triplets" and set(report.lengths) == {"anchor", "positive", "negative_1", "negative_2"}
    assert validate_path(path, "pairs").format == "pairs"


def test_validate_duplicates_across_files_of_a_folder(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", PAIRS[:2])
    write_jsonl(folder / "b.jsonl", PAIRS[1:])
    report = validate_path(folder)
    assert report.counts["duplicates"] == 1
    assert report.problems == [f"{folder / 'b.jsonl'}:1: duplicate of {folder / 'a.jsonl'}:2"]


def test_validate_with_columns(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"title": "t", "body": "b"}])
    assert validate_path(path, columns={"anchor": "title", "positive": "body"}).format == "pairs"


def test_validate_beir(tmp_path):
    root = make_beir(tmp_path / "b")
    report = validate_path(root)
    assert report.format == "beir" and report.problems == []
    assert report.counts == {"documents": 12, "test queries": 4, "test judgements": 4, "train queries": 8,
                             "train judgements": 8}
    assert set(report.lengths) == {"documents"} and report.lengths["documents"]["min"] >= 1
    with (root / "qrels" / "test.tsv").open("a") as handle:
        handle.write("q0\td404\t1\n")
    with pytest.raises(DataError, match=r"qrels/test\.tsv: 1 judgements of unknown document ids \(first: 'd404'"):
        validate_path(root)


def test_validate_beir_without_qrels_is_a_warning(tmp_path):
    root = make_beir(tmp_path / "b")
    for split in ("test", "train"):
        (root / "qrels" / f"{split}.tsv").unlink()
    report = validate_path(root)
    assert report.format == "beir" and any("no split files" in p for p in report.problems)


def test_validate_hard_errors_raise(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"query": "a", "document": "b"}\n{oops\n')
    with pytest.raises(DataError, match=r"m\.jsonl:2: malformed JSON"):
        validate_path(path)
