"""`ragtune data validate FILE`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ragtune.cli.eval_cmd import UNKNOWN_IDS, label_list
from ragtune.cli.index_cmd import CHUNK_SIZE, DOCS_HELP, EMBEDDER, META, OVERLAP, PDF_LAYOUT, TEXT_FIELD, metadata
from ragtune.cli.output import FLAGS, emit_json, say, show, table
from ragtune.models.packaged_llm import DEFAULT_GENERATOR

app = typer.Typer(no_args_is_help=True, help="Check and prepare training data.")


@app.command("validate")
def validate(
    path: Path = typer.Argument(..., help="a data file, a folder of files, a saved HF dataset or a BEIR directory"),
    format: str = typer.Option("auto", "--format", help="auto, pairs, triplets, scored_pairs"),
    column: Optional[list[str]] = typer.Option(None, "--column", help="ROLE=FIELD, e.g. anchor=title (repeatable)"),
) -> int:
    """Print the detected format, counts, duplicates, empty texts and length statistics."""
    from ragtune.config.load import apply_overrides
    from ragtune.data.validate import validate_path

    columns = apply_overrides({}, column or [])
    report = validate_path(path, format, {k: str(v) for k, v in columns.items()})
    if FLAGS.json:
        emit_json(asdict(report))
        return 0
    say(f"[bold]{escape(report.path)}[/]: format [cyan]{report.format}[/]")
    show(table("counts", ["what", "count"], [[k, v] for k, v in report.counts.items()]))
    show(table("length in words", ["column", "min", "mean", "p95", "max"],
               [[c, s["min"], f"{s['mean']:.1f}", s["p95"], s["max"]] for c, s in report.lengths.items()]))
    for problem in report.problems:
        say(f"[yellow]warning:[/] {escape(problem)}")
    say("[green]ok[/]" if not report.problems else f"{len(report.problems)} warning(s)")
    return 0


@app.command("mine")
def mine(
    data: Path = typer.Argument(..., help="(query, positive) pairs file, or a BEIR directory"),
    out: Path = typer.Option(..., "--out", "-o", help="JSONL file to write (triplets, n-tuples or labelled pairs)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="mining settings, e.g. num_negatives=5 "
                                                    "first_stage=hybrid(bm25,dense:MODEL) range_max=30"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="mining settings file (YAML/JSON)"),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="corpus.jsonl or BEIR directory to mine from; "
                                          "default: the data's own documents"),
    split: str = typer.Option("train", "--split", help="qrels split of a BEIR directory"),
    unknown_ids: str = UNKNOWN_IDS,
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps"),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16 or fp16"),
) -> int:
    """Mine hard negatives for each pair with BM25, dense or hybrid retrieval; print what each filter removed."""
    from ragtune.config import load_config
    from ragtune.retrieval.mine import mine_to_file
    from ragtune.utils import output_file

    output_file(out)
    settings = load_config("mine", config, overrides or [])
    report = mine_to_file(str(data), str(out), settings, str(corpus) if corpus else None, split, device, precision,
                          unknown_ids)
    if FLAGS.json:
        emit_json({"out": str(out), "pairs": report.pairs, "candidates": report.candidates,
                   "removed": dict(report.removed), "negatives": report.negatives, "short_pairs": report.short_pairs})
        return 0
    show(table("hard-negative mining", ["step", "count"],
               [["pairs", report.pairs], ["candidates retrieved", report.candidates],
                *[[f"removed: {k}", v] for k, v in report.removed.items()],
                ["negatives kept", report.negatives], ["pairs short of negatives", report.short_pairs]]))
    say(f"wrote {escape(str(out))} ({settings.output})")
    return 0


@app.command("chunk")
def chunk(
    docs: list[Path] = typer.Argument(..., help=DOCS_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="chunks.jsonl to write"),
    embedder: str = EMBEDDER,
    chunk_size: Optional[int] = CHUNK_SIZE,
    overlap: int = OVERLAP,
    text_field: str = TEXT_FIELD,
    meta: Optional[list[str]] = META,
    pdf_layout: bool = PDF_LAYOUT,
) -> int:
    """Split documents on headings, paragraphs and sentences into chunks with source, title, page and offsets."""
    from ragtune.errors import DataError
    from ragtune.ingest.chunk import Chunker, chunk_files, write_chunks
    from ragtune.models.device import choose_placement
    from ragtune.models.load import load_embedder
    from ragtune.utils import output_file

    output_file(out)
    chunker = Chunker.for_embedder(load_embedder(embedder, choose_placement("cpu", "fp32")), chunk_size, overlap,
                                   text_field, pdf_layout)
    chunks, warnings = chunk_files([str(d) for d in docs], chunker, metadata(meta))
    if not chunks:
        raise DataError(f"{', '.join(map(str, docs))}: no text to chunk ({'; '.join(warnings[:3])})")
    write_chunks(chunks, out)
    if FLAGS.json:
        emit_json({"out": str(out), "chunks": len(chunks), "sources": len({c.source for c in chunks}),
                   "skipped": warnings})
        return 0
    say(f"wrote {len(chunks)} chunks from {len({c.source for c in chunks})} documents to {escape(str(out))}")
    for warning in warnings:
        say(f"[yellow]skipped:[/] {escape(warning)}")
    return 0


@app.command("synth")
def synth(
    source: Path = typer.Argument(..., help="an index folder, or chunks.jsonl from `ragtune data chunk`"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for pairs.jsonl, rerank.jsonl (and rag_sft.jsonl, "
                             "clara_compress.jsonl)"),
    generator: str = typer.Option(DEFAULT_GENERATOR, "--generator", help="local model (path or hub id) or an "
                                  "OpenAI-compatible base URL; default: the packaged SmolLM2-135M-Instruct"),
    generator_model: Optional[str] = typer.Option(None, "--generator-model", help="served model name, for a URL"),
    questions: int = typer.Option(3, "--questions", min=1, help="questions asked per chunk"),
    round_trip_k: int = typer.Option(5, "--round-trip-k", min=1, help="keep a question only if its chunk ranks in "
                                     "the retriever's top k"),
    negatives: int = typer.Option(3, "--negatives", min=0, help="retrieved non-source chunks per question, as "
                                  "label-0 pairs in rerank.jsonl"),
    rag_sft: bool = typer.Option(False, "--rag-sft", help="also write LLM data: retrieved context + question -> "
                                 "answer from the source chunk"),
    clara: bool = typer.Option(False, "--clara", help="also write CLaRa stage-1 data: each chunk with its kept "
                               "questions' answers and with a paraphrase of it (train clara, stage: compress)"),
    max_chunks: Optional[int] = typer.Option(None, "--max-chunks", min=1, help="use the first N chunks"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the files of an earlier run in --out"),
) -> int:
    """Generate questions for each chunk, keep those the retriever can answer, write training data."""
    from ragtune.rag.generators import make_generator
    from ragtune.rag.synth import synth_from

    written, report = synth_from(str(source), str(out), lambda: make_generator(generator, generator_model), questions,
                                 round_trip_k, negatives, rag_sft, max_chunks, overwrite, clara)
    if FLAGS.json:
        emit_json({"written": [str(p) for p in written], "chunks": report.chunks, "generated": report.generated,
                   "removed": dict(report.removed), "kept": report.kept,
                   **({"paraphrases": {"generated": report.paraphrased, "removed": dict(report.paraphrases_removed),
                                       "kept": report.paraphrases_kept}} if clara else {})})
        return 0
    for line in report.lines():
        say(escape(line))
    say("wrote " + ", ".join(escape(str(p)) for p in written))
    return 0


# what `data clara` and `data rag-sft` read each answer from
ANSWER_FIELD = typer.Option("final_decision", "--answer-field", help="query field (or metadata field) holding the "
                            "label or short answer")
LONG_ANSWER_FIELD = typer.Option("long_answer", "--long-answer-field", help="query field with the free-text answer "
                                 "(empty: none)")
LABELS = typer.Option("yes,no,maybe", "--labels", help="label set the answer starts with; empty for free answers")


@app.command("clara")
def clara(
    data: Path = typer.Argument(..., help="BEIR directory whose queries carry answers (e.g. PubMedQA)"),
    out: Path = typer.Option(..., "--out", "-o", help="JSONL records to write, for `ragtune train clara`"),
    stage: str = typer.Option("instruct", "--stage", help="compress (gold passages), instruct (top k) or e2e (top "
                              "candidates, gold ones as positives)"),
    pipeline: str = typer.Option("bm25", "--pipeline", "-p", help="retrieval spec for instruct and e2e"),
    split: str = typer.Option("train", "--split", help="qrels split (keep the test questions out)"),
    k: int = typer.Option(3, "-k", min=1, help="documents per record (instruct)"),
    candidates: int = typer.Option(10, "--candidates", min=1, help="candidates per record (e2e)"),
    answer_field: str = ANSWER_FIELD, long_answer_field: Optional[str] = LONG_ANSWER_FIELD,
    labels: Optional[str] = LABELS,
    sentences: Optional[int] = typer.Option(2, "--sentences", min=1, help="sentences of the long answer kept"),
    unknown_ids: str = UNKNOWN_IDS,
) -> int:
    """Write CLaRa stage records: documents (or candidates with positives), question and answer."""
    from ragtune.choices import unknown
    from ragtune.config.clara import STAGES
    from ragtune.data.beir import load_beir
    from ragtune.rag.sft_data import clara_rows, write_rag_sft
    from ragtune.retrieval.spec import parse_spec
    from ragtune.utils import output_file

    output_file(out)
    if stage not in STAGES:
        from ragtune.errors import ConfigError

        raise ConfigError(unknown("--stage", stage, STAGES))
    if stage != "compress":
        parse_spec(pipeline)
    ir = load_beir(data, split, unknown_ids)
    label_set = label_list(labels)
    rows = clara_rows(ir, data, pipeline, stage, k, candidates, answer_field, long_answer_field or None, label_set,
                      sentences)
    write_rag_sft(out, rows)
    left_out = len(ir.queries) - len(rows)
    if FLAGS.json:
        emit_json({"out": str(out), "records": len(rows), "stage": stage, "left_out": left_out})
        return 0
    say(f"wrote {len(rows)} CLaRa {stage} records to {escape(str(out))}" +
        (f"; {left_out} questions left out (no document, or fewer than {candidates} candidates)" if left_out else ""))
    return 0


@app.command("rag-sft")
def rag_sft(
    data: Path = typer.Argument(..., help="BEIR directory whose queries carry answers (e.g. PubMedQA)"),
    out: Path = typer.Option(..., "--out", "-o", help="chat JSONL to write, for `ragtune train llm`"),
    pipeline: str = typer.Option("bm25", "--pipeline", "-p", help="retrieval spec that builds each context "
                                 "(e.g. dense:runs/embed/final), or gold"),
    split: str = typer.Option("train", "--split", help="qrels split (keep the test questions out)"),
    k: int = typer.Option(3, "-k", min=1, help="passages per context"),
    answer_field: str = ANSWER_FIELD, long_answer_field: Optional[str] = LONG_ANSWER_FIELD,
    labels: Optional[str] = LABELS,
    sentences: Optional[int] = typer.Option(None, "--sentences", min=1, help="keep the first N sentences of each "
                                            "long answer (shorter targets train faster)"),
    unknown_ids: str = UNKNOWN_IDS,
) -> int:
    """Write RAG SFT chats: retrieved context + question -> label, long answer and [n] citation of the gold
    passages, with the prompt `eval rag` asks with."""
    from ragtune.data.beir import load_beir
    from ragtune.rag.evaluate import CONTEXTS
    from ragtune.rag.sft_data import rag_sft_rows, write_rag_sft
    from ragtune.retrieval.spec import parse_spec
    from ragtune.utils import output_file

    output_file(out)
    if pipeline not in CONTEXTS:
        parse_spec(pipeline)
    ir = load_beir(data, split, unknown_ids)
    label_set = label_list(labels)
    rows = rag_sft_rows(ir, data, pipeline, k, label_set, answer_field, long_answer_field or None, sentences)
    write_rag_sft(out, rows)
    if FLAGS.json:
        emit_json({"out": str(out), "records": len(rows)})
        return 0
    say(f"wrote {len(rows)} chat records to {escape(str(out))} (contexts from {escape(pipeline)}, top {k})")
    return 0
