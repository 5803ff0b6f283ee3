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


QUANTIZE_HELP = {"onnx": "auto (this CPU's int8 and fp32, the fastest that passes), none (fp32 only), or int8 for "
                         "avx512_vnni, avx512, avx2 or arm64",
                 "openvino": "auto (the IR at this CPU's precision and its static int8 copy, the fastest that "
                             "passes), none (no int8), or int8 (only the static int8 copy)"}
SOURCE_HELP = "a ragtune run (train embed or train rerank) or a saved model"
# the options that `export onnx` and `export openvino` share
OUT = typer.Option(..., "--out", "-o", help="folder for the model copy with its exported files")
MAX_DROP = typer.Option(0.005, "--max-drop", help="largest fall of the primary metric against torch fp32 that the "
                        "export may show")
EVAL = typer.Option(None, "--eval", help="a BEIR directory to gate on (needed for a bare model; a run uses its own "
                    "evaluation split)")
SPLIT = typer.Option("test", "--split", help="the --eval collection's qrels split")
OVERWRITE = typer.Option(False, "--overwrite", help="replace an existing --out folder")


@app.command("onnx")
def onnx(source: Path = typer.Argument(..., help=SOURCE_HELP), out: Path = OUT,
         quantize: str = typer.Option("auto", "--quantize", help=QUANTIZE_HELP["onnx"]), max_drop: float = MAX_DROP,
         eval_dir: Path = EVAL, split: str = SPLIT, overwrite: bool = OVERWRITE) -> int:
    """Export an embedder or cross-encoder to ONNX (fused fp32 and dynamic int8), kept only if the evaluation split
    shows it within --max-drop of torch; ragtune then runs the file the export chose (backend: auto)."""
    return _export("onnx", source, out, quantize, max_drop, eval_dir, split, overwrite)


@app.command("openvino")
def openvino(source: Path = typer.Argument(..., help=SOURCE_HELP), out: Path = OUT,
             quantize: str = typer.Option("auto", "--quantize", help=QUANTIZE_HELP["openvino"]),
             max_drop: float = MAX_DROP, eval_dir: Path = EVAL, split: str = SPLIT, overwrite: bool = OVERWRITE) -> int:
    """Export an embedder or cross-encoder to OpenVINO IR (at the CPU's precision, and static int8 calibrated on the
    run's training texts), kept only if the evaluation split shows it within --max-drop of torch; ragtune then runs
    the file the export chose (backend: auto)."""
    return _export("openvino", source, out, quantize, max_drop, eval_dir, split, overwrite)


def _export(runtime: str, source: Path, out: Path, quantize: str, max_drop: float, eval_dir: Path | None, split: str,
            overwrite: bool) -> int:
    import math

    from ragtune.choices import unknown
    from ragtune.errors import ConfigError
    from ragtune.export.gate import gate_for
    from ragtune.export.onnx import QUANTIZE, export

    if quantize not in QUANTIZE[runtime]:
        raise ConfigError(unknown("--quantize", quantize, QUANTIZE[runtime]))
    if not math.isfinite(max_drop) or max_drop < 0:
        raise ConfigError(f"--max-drop must be a number >= 0, got {max_drop}")
    folder, kind, build_gate = gate_for(source, eval_dir, split)
    reporter = RichReporter()
    title = {"onnx": "ONNX", "openvino": "OpenVINO"}[runtime]
    with reporter.phase(f"Exporting the {'cross-encoder' if kind == 'rerank' else 'embedder'} to {title}"):
        record = export(folder, out, kind, build_gate, runtime, quantize, max_drop, overwrite, note=reporter.note)
    if FLAGS.json:
        emit_json({**record, "out": str(out)})  # the record holds the runtime's version by its name
        return 0
    for row in record["rows"]:
        verdict = "" if not row["file"] else "  kept" if row["passed"] else f"  refused (drop {row['drop']:.4f})"
        say(f"{row['name']:30s} {record['primary_metric']} {row['metric']:.4f}  {row['per_second']:9.1f} "
            f"{record['unit']}/s{verdict}")
    runs = "torch (it was the fastest here)" if record["chosen"] == "torch" else f"{runtime}/{record['chosen']}"
    say(f"wrote {escape(str(out))}: ragtune runs {runs}; SentenceTransformer/CrossEncoder load the folder as usual")
    return 0
