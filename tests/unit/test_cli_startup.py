"""The CLI starts without torch: a command pays for a library only when it uses one; piped output stays whole."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "datasets", "peft", "trl", "sentence_transformers", "faiss")


def _imported_after(code: str) -> dict:
    """Run `code` in a fresh interpreter; return which heavy modules it imported, and what it printed."""
    probe = (f"import sys, io, contextlib\nout = io.StringIO()\nwith contextlib.redirect_stdout(out):\n"
             f"    {code}\nprint(__import__('json').dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules], "
             f"'out': out.getvalue()}}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_cli_entry_module_imports_no_torch():
    assert _imported_after("import ragtune.cli.main")["heavy"] == []


@pytest.mark.parametrize("argv", [["--help"], ["train", "embed", "--help"], ["config", "show", "llm"],
                                  ["train", "embed", "train.learning_rate=abc"], ["train", "llm"],
                                  ["quickstart", "rag", "llm.no_such_key=1"]])
def test_commands_that_need_no_model_import_no_torch(argv):
    found = _imported_after(f"from ragtune.cli.main import run; code = run({argv!r})")
    assert found["heavy"] == [], f"{argv} imported {found['heavy']}"


def test_data_validate_imports_no_torch(tmp_path):
    data = tmp_path / "ok.jsonl"
    data.write_text('{"query": "q", "positive": "p"}\n', encoding="utf-8")
    found = _imported_after(f"from ragtune.cli.main import run; code = run(['data', 'validate', {str(data)!r}])")
    assert found["heavy"] == [] and "records" in found["out"]


def test_piped_config_show_keeps_every_key_whole_on_one_line(cli):
    code, out, _ = cli("config", "show", "embed")
    assert code == 0
    rows = [line for line in out.splitlines() if "train.learning_rate" in line]
    assert len(rows) == 1 and "5e-05" in rows[0]  # key, type, default and help on the one line grep finds
    keys = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert "model.max_seq_length" in keys and not any(k.endswith("…") for k in keys)


def test_a_config_error_is_one_line_before_any_model_loads(cli):
    code, _, err = cli("quickstart", "rag", "llm.no_such_key=1")
    assert code == 2 and "unknown key 'no_such_key'" in err and len(err.strip().splitlines()) == 1


def test_index_info_imports_no_torch(cli, tiny_embedder, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Statins lower LDL cholesterol.", encoding="utf-8")
    code, _, err = cli("index", "build", docs, "--out", tmp_path / "index", "--embedder", tiny_embedder)
    assert code == 0, err
    found = _imported_after(f"from ragtune.cli.main import run; code = run(['index', 'info', {str(tmp_path / 'index')!r}])")
    assert "v000001" in found["out"] and "torch" not in found["heavy"], found["heavy"]
