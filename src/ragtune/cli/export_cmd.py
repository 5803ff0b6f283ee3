"""`ragtune export merge RUN_DIR|ADAPTER --out DIR`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from ragtune.cli.output import FLAGS, RichReporter, emit_json, say

app = typer.Typer(no_args_is_help=True, help="Write artifacts that serving stacks load directly.")


@app.command("merge")
def merge(source: Path = typer.Argument(..., help="a ragtune run directory or a PEFT adapter folder"),
          out: Path = typer.Option(..., "--out", "-o", help="folder for the merged model"),
          dtype: str = typer.Option("auto", "--dtype", help="auto (the base's own), fp32, bf16 or fp16"),
          overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out folder")) -> int:
    """Merge a LoRA/QLoRA adapter into its (unquantized) base: AutoModelForCausalLM and vLLM load the result."""
    from ragtune.config.base import check_placement
    from ragtune.export.merge import merge_adapter

    check_placement("--dtype", dtype)
    with RichReporter().phase("Merging the adapter"):
        path = merge_adapter(source, out, dtype, overwrite)
    if FLAGS.json:
        emit_json({"merged": str(path)})
    else:
        say(f"merged model written to {escape(str(path))} (load with AutoModelForCausalLM.from_pretrained or vLLM)")
    return 0


@app.command("langchain")
def langchain(index: Path = typer.Argument(..., help="a ragtune index folder"),
              out: Path = typer.Argument(..., help="folder for index.faiss + index.pkl"),
              overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing folder")) -> int:
    """Write what LangChain's FAISS.load_local reads (its loader uses pickle: load only folders you trust)."""
    from ragtune.integrations.langchain import export_langchain

    path = export_langchain(index, out, overwrite)
    if FLAGS.json:
        emit_json({"langchain_faiss": str(path)})
    else:
        say(f"wrote {escape(str(path))}: load it with FAISS.load_local(..., allow_dangerous_deserialization=True); "
            "LangChain's loader uses pickle, so load only folders you trust (see README.txt there)")
    return 0
