"""Progress on long work: a line every 10% off a terminal, nothing under -q/--json or off rank 0."""

from __future__ import annotations

import json

from tests.unit.test_bad_input import _write


def test_every_step_says_count_time_and_eta_at_each_tenth():
    from ragtune.progress import every_step

    lines: list[str] = []
    advance = every_step("Encoding", 100, lines.append, quiet_s=0)
    for _ in range(100):
        advance(1)
    assert len(lines) == 10 and lines[0].startswith("Encoding: 10% (10/100)") and "left" in lines[0]
    assert lines[-1].startswith("Encoding: 100% (100/100)")
    big: list[str] = []
    every_step("Encoding", 7, big.append, quiet_s=0)(7)  # one step past every tenth: one line
    assert big == [big[0]] and big[0].startswith("Encoding: 100% (7/7)")
    short: list[str] = []
    every_step("Encoding", 7, short.append)(7)  # work done within QUIET_S says nothing
    assert short == []


def test_counting_is_silent_off_rank_0(monkeypatch):
    import ragtune.utils
    from ragtune.progress import counting, set_display

    shown = []

    def display(label, total):
        shown.append(label)
        raise AssertionError("rank 1 must not display")

    set_display(display)
    monkeypatch.setattr(ragtune.utils, "rank", lambda: 1)
    try:
        with counting("Encoding", 10) as advance:
            advance(10)
    finally:
        set_display(None)
    assert shown == []


def test_index_build_reports_encoding_progress_on_stderr(cli, tiny_embedder, tmp_path, monkeypatch):
    import ragtune.progress
    import ragtune.retrieval.dense as dense

    monkeypatch.setattr(dense, "PROGRESS_BATCHES", 1)  # count every batch, so 40 chunks take several slices
    monkeypatch.setattr(ragtune.progress, "QUIET_S", 0.0)  # the tiny model encodes 40 chunks well within 2 s
    docs = _write(tmp_path / "docs" / "notes.jsonl", "".join(
        json.dumps({"text": f"note {i} about the heart and its rhythm", "id": f"n{i}"}) + "\n" for i in range(40)))
    code, _, err = cli("index", "build", docs, "--out", tmp_path / "index", "--embedder", tiny_embedder)
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("Encoding: ")]
    assert lines and lines[-1].startswith("Encoding: 100% (40/40)")
    assert any(line.startswith("Chunking files: 100% (1/1)") for line in err.splitlines())
    for flag in ("-q", "--json"):
        code, _, err = cli(flag, "index", "build", docs, "--out", tmp_path / f"index{flag}", "--embedder",
                           tiny_embedder)
        assert code == 0 and "Encoding: " not in err, err


def test_a_line_carries_what_the_work_found_so_far():
    from ragtune.progress import every_step

    lines, found = [], {"kept": 0}
    advance = every_step("Checking questions", 2, lines.append, quiet_s=0, detail=lambda: f"{found['kept']} kept")
    found["kept"] = 3
    advance(1)
    found["kept"] = 5
    advance(1)
    assert lines[0].startswith("Checking questions: 50% (1/2), 3 kept, ")
    assert lines[-1].startswith("Checking questions: 100% (2/2), 5 kept, ")
