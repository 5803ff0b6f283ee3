"""`ragtune eval retrieval --data BEIR_DIR --pipeline SPEC ...`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ragtune.cli.output import FLAGS, RichReporter, emit_json, say, show, table
from ragtune.models.packaged_llm import DEFAULT_GENERATOR

app = typer.Typer(no_args_is_help=True, help="Evaluate models and pipelines on held-out data.")
UNKNOWN_IDS = typer.Option("error", "--unknown-ids", help="qrels naming unknown query/document ids: error, or skip "
                           "them with a count")


def label_list(labels: Optional[str]) -> list[str]:
    """`--labels yes,no,maybe` as a list (empty: free answers)."""
    return [x.strip() for x in (labels or "").split(",") if x.strip()]


def load_ir(data: Optional[Path], split: str, corpus: Optional[Path], queries: Optional[Path],
            qrels: Optional[Path], unknown_ids: str):
    """A judged collection from a BEIR directory, or from corpus + queries + qrels files."""
    from ragtune.data.beir import load_beir, load_collection
    from ragtune.errors import ConfigError

    files = [corpus, queries, qrels]
    if data is not None and any(files):
        raise ConfigError("give either --data BEIR_DIR or --corpus/--queries/--qrels, not both")
    if data is not None:
        return load_beir(data, split, unknown_ids)
    if not all(files):
        raise ConfigError("give --data BEIR_DIR, or all three of --corpus FILE --queries FILE --qrels FILE")
    return load_collection(corpus, queries, qrels, unknown_ids)


@app.command("retrieval")
def retrieval(
    overrides: Optional[list[str]] = typer.Argument(None, help="retrieval settings, e.g. bm25.k1=1.2 fusion.method=wsum"),
    data: Optional[Path] = typer.Option(None, "--data", help="BEIR directory (corpus.jsonl, queries.jsonl, qrels/)"),
    split: str = typer.Option("test", "--split", help="qrels split to evaluate on"),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="corpus file (_id, title, text), instead of --data"),
    queries: Optional[Path] = typer.Option(None, "--queries", help="queries file (_id, text), instead of --data"),
    qrels: Optional[Path] = typer.Option(None, "--qrels", help="qrels TSV (query-id, corpus-id, score)"),
    pipeline: Optional[list[str]] = typer.Option(None, "--pipeline", "-p", help="bm25 | dense:MODEL | "
                                                 "hybrid(SPEC,SPEC) | SPEC+rerank:MODEL@K; repeat (default: the "
                                                 "config's pipelines)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write results.json, results.md, results.png and "
                                       "results.html here"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="retrieval settings file (YAML/JSON)"),
    tune_fusion: bool = typer.Option(False, "--tune-fusion", help="fit the fusion weights (or RRF k) on --tune-split"),
    tune_split: str = typer.Option("dev", "--tune-split", help="qrels split for --tune-fusion (dev, or train)"),
    max_queries: Optional[int] = typer.Option(None, "--max-queries", min=1, help="evaluate a seeded sample of N queries"),
    stat_test: str = typer.Option("student", "--stat-test", help="paired test against the first pipeline: "
                                  "student (t-test), fisher (randomisation) or tukey"),
    unknown_ids: str = UNKNOWN_IDS,
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps"),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16 or fp16"),
    where: Optional[list[str]] = typer.Option(None, "--where", help="metadata filter on the corpus records (their "
                                              "`metadata` object and other fields), as in `ragtune query`; "
                                              "queries left without a relevant document are dropped"),
) -> int:
    """Score retrieval pipelines side by side on one collection."""
    from ragtune.config import load_config
    from ragtune.config.base import check_placement
    from ragtune.data.embed import sample_queries
    from ragtune.errors import ConfigError
    from ragtune.eval.results import write_results
    from ragtune.eval.retrieval import HEADLINE, evaluate_pipelines
    from ragtune.retrieval.spec import parse_spec
    from ragtune.utils import output_folder

    if out:
        output_folder(out)  # before the evaluation, not after it
    if stat_test not in ("student", "fisher", "tukey"):
        raise ConfigError(f"--stat-test '{stat_test}': use student, fisher or tukey")
    check_placement("--device", device)
    check_placement("--precision", precision)
    extra = [f"device={device}"] if device != "auto" else []
    extra += [f"precision={precision}"] if precision != "auto" else []
    settings = load_config("retrieval", config, [*(overrides or []), *extra])
    pipeline = pipeline or settings.pipelines
    if not pipeline:
        raise ConfigError("no pipeline to evaluate; give --pipeline SPEC (repeatable) or pipelines: [...] in -c CONFIG")
    for spec in pipeline:  # a bad spec or filter fails before any data or model loads
        parse_spec(spec)
    from ragtune.retrieval.filters import from_where, matching_records

    where_filter = from_where(where) if where else None
    ir = sample_queries(load_ir(data, split, corpus, queries, qrels, unknown_ids), max_queries, seed=42)
    tune = None
    if tune_fusion:
        if data is None:
            raise ConfigError("--tune-fusion needs --data BEIR_DIR with a --tune-split (dev or train) to fit on")
        from ragtune.data.beir import load_beir

        tune = load_beir(data, tune_split, unknown_ids)
    allowed = None
    if where_filter is not None:
        from ragtune.data.beir import corpus_metadata

        allowed = matching_records(corpus_metadata(corpus or data / "corpus.jsonl"), where_filter)
    results = evaluate_pipelines(ir, pipeline, settings, tune=tune, stat_test=stat_test, reporter=RichReporter(),
                                 show_progress=True, allowed=allowed)
    if out:
        write_results(out, results, ir.name, HEADLINE, queries=ir.queries)
    if FLAGS.json:
        from dataclasses import asdict

        emit_json({"dataset": ir.name, "pipelines": [asdict(r) for r in results]})
        return 0
    rows = []
    for r in results:
        marks = r.significance or {"better": {}, "worse": {}}
        cells = [f"{r.metrics[m]:.4f}{'[green]↑[/]' if marks['better'].get(m) else '[red]↓[/]' if marks['worse'].get(m) else ''}"
                 for m in HEADLINE]
        t = r.timings
        rows.append([r.name, *cells, f"{t['index_build_s']:.1f}",
                     f"{t['first_stage_p50_ms']:.0f}/{t['first_stage_p95_ms']:.0f}",
                     f"{t['rerank_p50_ms']:.0f}/{t['rerank_p95_ms']:.0f}"])
    show(table(f"{ir.name}: {len(ir.queries)} queries, {len(ir.corpus)} documents", 
               ["pipeline", *HEADLINE, "index s", "first ms p50/p95", "rerank ms p50/p95"], rows))
    if len(results) > 1:
        say(f"↑/↓: significantly better/worse than the first row ({stat_test} paired test, p < 0.05)")
    if out:
        say(f"wrote {out / 'results.json'}, results.md, results.png and results.html")
    return 0


@app.command("generation")
def generation(
    model: str = typer.Argument(..., help="a run directory (llm or seq2seq), a model folder or a hub id"),
    data: Path = typer.Option(..., "--data", help="eval records, in any format train llm/seq2seq reads"),
    overrides: Optional[list[str]] = typer.Argument(None, help="settings, e.g. eval.metrics=[perplexity,rouge_l]"),
    task: Optional[str] = typer.Option(None, "--task", help="llm or seq2seq (a run directory knows its own)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="llm/seq2seq config for templates and metrics"),
) -> int:
    """Perplexity, ROUGE-L, BLEU/chrF, EM/F1, accuracy and embedding similarity of a generator on an eval file."""
    from ragtune.eval.generation_run import evaluate_generation

    with RichReporter().phase("Evaluating generation"):
        metrics = evaluate_generation(model, str(data), task, str(config) if config else None, overrides or [])
    if FLAGS.json:
        emit_json({"model": model, "data": str(data), "metrics": metrics})
        return 0
    show(table(f"{model} on {data}", ["metric", "value"], [[k, v] for k, v in metrics.items()]))
    return 0


@app.command("rag")
def rag(
    data: Path = typer.Option(..., "--data", help="BEIR directory whose queries carry reference answers"),
    pipeline: list[str] = typer.Option(..., "--pipeline", "-p", help="retrieval spec per system (repeat to compare, "
                                       "e.g. dense:BASE and dense:runs/x/final); `none` answers without context, "
                                       "`gold` from the gold passages"),
    generator: Optional[list[str]] = typer.Option(None, "--generator", help="local model or OpenAI-compatible URL; "
                                                  "one for all systems or one per --pipeline (default: the "
                                                  f"packaged {DEFAULT_GENERATOR})"),
    no_generate: bool = typer.Option(False, "--no-generate", help="retrieval only: gold-passage recall per system"),
    generator_model: Optional[str] = typer.Option(None, "--generator-model", help="served model name, for a URL"),
    split: str = typer.Option("test", "--split", help="qrels split"),
    answer_field: str = typer.Option("final_decision", "--answer-field", help="query field (or metadata field) "
                                     "holding the reference answer"),
    long_answer_field: Optional[str] = typer.Option(None, "--long-answer-field", help="query field holding a "
                                                    "free-text answer, for ROUGE-L (e.g. long_answer)"),
    labels: Optional[str] = typer.Option("yes,no,maybe", "--labels", help="comma-separated label set for accuracy, "
                                         "macro-F1 and per-class recall; empty for EM/F1"),
    k: int = typer.Option(5, "-k", min=1, help="passages per question"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1, help="answer length; 1 scores the labels "
                                       "alone (fast), without free text or citations"),
    max_queries: Optional[int] = typer.Option(None, "--max-queries", min=1, help="a seeded sample of N questions"),
    calibrate_on: Optional[str] = typer.Option(None, "--calibrate-on", help="qrels split (e.g. train) on which each "
                                               "system's label offsets are fitted for macro-F1, then applied here"),
    out: Optional[Path] = typer.Option(None, "--out", help="write rag_results.json, .md and .html here"),
    unknown_ids: str = UNKNOWN_IDS,
) -> int:
    """End to end: gold-passage recall, answer accuracy and macro-F1 (or EM/F1), and answers citing a gold
    passage; with labels, the majority-label baseline comes first."""
    from ragtune.config.rag import RAGSection
    from ragtune.data.beir import load_beir
    from ragtune.data.embed import sample_queries
    from ragtune.errors import ConfigError
    from ragtune.rag.evaluate import CONTEXTS, evaluate_rag, metric_columns, rag_payload, write_rag_results
    from ragtune.rag.generators import make_generator
    from ragtune.retrieval.spec import parse_spec
    from ragtune.utils import output_folder

    if out:
        output_folder(out)
    for spec in pipeline:
        if spec not in CONTEXTS:
            parse_spec(spec)
    if generator and no_generate:
        raise ConfigError("eval rag: --no-generate evaluates retrieval alone; drop --generator, or drop "
                          "--no-generate to answer")
    ir = sample_queries(load_beir(data, split, unknown_ids), max_queries, seed=42)
    if calibrate_on == split:
        raise ConfigError(f"--calibrate-on {calibrate_on} is the split being measured; fit the offsets on other "
                          "questions, e.g. --calibrate-on train")
    calibration = load_beir(data, calibrate_on, unknown_ids) if calibrate_on else None
    generators = [] if no_generate else [make_generator(g, generator_model) for g in generator or [DEFAULT_GENERATOR]]
    label_set = label_list(labels)
    with RichReporter().phase("Retrieving" if no_generate else "Answering"):
        results = evaluate_rag(ir, str(data), pipeline, generators, RAGSection(k=k, max_new_tokens=max_new_tokens),
                               answer_field, label_set, long_answer_field, with_majority=bool(generators),
                               calibration=calibration)
    if out:
        write_rag_results(out, results, ir.name, len(ir.queries), ir.queries)
    if FLAGS.json:
        emit_json(rag_payload(results, ir.name, len(ir.queries)))
        return 0
    for n, result in enumerate(results, start=1):  # the systems by number: their names are too long for columns
        say(f"[bold]#{n}[/] {escape(result.name)}")
    show(table(f"{ir.name}: {len(ir.queries)} questions", ["metric", *[f"#{n}" for n in range(1, len(results) + 1)]],
               [[m, *[r.metrics.get(m, "") for r in results]] for m in metric_columns(results)]))
    return 0
