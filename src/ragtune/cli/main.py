"""Entry point: `ragtune` and `python -m ragtune`. Maps verbs to library calls and errors to exit 2."""

from __future__ import annotations

import os
import sys

import typer
from rich.markup import escape

try:  # typer >= 0.20 bundles its own click; its exceptions are not click's
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions

from ragtune.cli import (
    config_cmd,
    data_cmd,
    doctor_cmd,
    eval_cmd,
    export_cmd,
    index_cmd,
    query_cmd,
    quickstart_cmd,
    report_cmd,
    serve_cmd,
    train_cmd,
)
from ragtune.cli.output import FLAGS, emit_json, errors, progress_display, take_global_flags
from ragtune.errors import RagtuneError
from ragtune.progress import set_display

app = typer.Typer(name="ragtune", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune, evaluate and ship every model in a RAG stack. Global flags: --json, -q, -v.")
app.add_typer(train_cmd.app, name="train")
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(data_cmd.app, name="data")
app.add_typer(config_cmd.app, name="config")
app.add_typer(export_cmd.app, name="export")
app.add_typer(index_cmd.app, name="index")
app.command("query")(query_cmd.query)
app.command("doctor")(doctor_cmd.doctor)
app.command("quickstart")(quickstart_cmd.quickstart)
app.command("report")(report_cmd.report)
app.command("serve")(serve_cmd.serve)


EXTRAS = {"trl": "llm", "peft": "llm", "sacrebleu": "llm", "rouge_score": "llm", "pypdf": "ingest",
          "langchain_core": "rag", "langchain_community": "rag", "langchain_huggingface": "rag",
          "tensorboard": "tensorboard", "pyarrow": "dev", "fastapi": "serve",
          "uvicorn": "serve", "prometheus_client": "serve", "onnxruntime": "onnx", "onnx": "onnx",
          "openvino": "openvino", "nncf": "openvino"}


def _fail(message: str, code: int = 2) -> int:
    if FLAGS.json:
        emit_json({"error": message, "exit_code": code})
    else:
        errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return code


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` and return the exit code (no sys.exit), for tests and embedding."""
    args = take_global_flags(list(sys.argv[1:] if argv is None else argv))
    set_display(progress_display)
    try:
        result = app(args=args, prog_name="ragtune", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except RagtuneError as exc:
        if os.environ.get("RAGTUNE_DEBUG") == "1":
            raise
        return _fail(str(exc), exc.exit_code)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in EXTRAS or os.environ.get("RAGTUNE_DEBUG") == "1":
            raise
        return _fail(f"this command needs the optional package '{top}', which is not installed; run "
                     f"`pip install 'ragtune[{EXTRAS[top]}]'`")
    except typer.Exit as exc:
        return exc.exit_code
    except click_exceptions.ClickException as exc:
        message = exc.format_message().strip().rstrip(".")
        if not message:  # no_args_is_help: the help text has been printed
            return 0
        command = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "ragtune"
        return _fail(f"{message}; see `{command} --help`", 2)
    except (typer.Abort, KeyboardInterrupt):
        return _fail("interrupted; a training run can continue with --resume", 130)


def main() -> None:
    sys.exit(run())
