"""`ragtune eval generation`: a model (or a run directory) on an eval file, with the task's metrics."""

from __future__ import annotations

from pathlib import Path

from ragtune.config import load_config
from ragtune.errors import ConfigError
from ragtune.tasks import TASKS


def _task_and_model(source: str, task: str | None) -> tuple[str, str, Path | None]:
    """A run directory gives its task (the `task:` its config.yaml records), config and final/ model; anything
    else is a model for `task`."""
    from ragtune.config.load import recorded_task
    from ragtune.run_dir import RunDir

    run = RunDir(source)
    if not run.is_run():
        return task or "llm", source, None
    found = recorded_task(run.config)
    if found is None:
        raise ConfigError(f"{run.config}: records no task (written by an older ragtune); pass --task llm or --task "
                          "seq2seq")
    if not TASKS[found].generation:
        raise ConfigError(f"{run.path}: a {found} run; eval generation takes "
                          f"{' and '.join(t.name for t in TASKS.values() if t.generation)} runs")
    return task or found, str(run.final), run.config


def evaluate_generation(source: str, data: str, task: str | None = None, config: str | None = None,
                        overrides: list[str] | None = None) -> dict[str, float]:
    """Every configured generation metric of `source` on the records of `data`."""
    from ragtune.models.device import choose_placement
    from ragtune.models.language_model import load_for_inference

    task, model_path, run_config = _task_and_model(source, task)
    if task not in TASKS or not TASKS[task].generation:
        raise ConfigError(f"--task '{task}': use {' or '.join(t.name for t in TASKS.values() if t.generation)}")
    settings = [f"model.name={model_path}", f"data.train={data}", f"data.eval={data}", *(overrides or [])]
    cfg = load_config(task, config or run_config, settings)
    placement = choose_placement(cfg.model.device, cfg.model.precision)
    if task == "llm":
        from ragtune.data.sft import load_sft_data
        from ragtune.data.sft_tokens import encode_all
        from ragtune.eval.generation import chat_evaluator
        from ragtune.models.language_model import prepare_chat

        _, _, examples = load_sft_data(cfg.data, cfg.train.seed)
        model, tokenizer = load_for_inference(model_path, placement)
        _, _, stops = prepare_chat(model, tokenizer, cfg.template)
        encoded = encode_all(examples, tokenizer, cfg.max_length, cfg.train_on_prompt, what="eval")
        return chat_evaluator(cfg, tokenizer, examples, encoded, stops)(model)
    from ragtune.data.seq2seq import Encoder, load_seq2seq_data
    from ragtune.eval.generation import seq2seq_evaluator

    _, pairs = load_seq2seq_data(cfg.data, cfg.source_lang, cfg.target_lang, cfg.train.seed)
    model, tokenizer = load_for_inference(model_path, placement, seq2seq=True)
    encoder = Encoder(tokenizer, model.config.model_type, cfg.source_prefix, cfg.max_source_length,
                      cfg.max_target_length)
    encoder.check_languages(pairs)
    return seq2seq_evaluator(cfg, encoder, pairs)(model)
