"""final/README.md of every run: the base model, the data, the method, the before/after proof with the command that
reproduces it, load code that works as written, and the licenses where they are known.

Embedders, rerankers and late-interaction models keep sentence-transformers' own card below ragtune's part, with
ragtune's after-metrics in its model-card data, so the metadata block (`model-index`) holds them. Generators and
seq2seq models get a front matter of huggingface_hub's model-card data with the same `model-index`. A LoRA run's
card also shows the embedding resize that PEFT's standard load needs when the run added chat tokens.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from ragtune.eval.report import Comparison, summary_markdown
from ragtune.run_dir import RunDir
from ragtune.utils import write_atomic

log = logging.getLogger(__name__)

# task -> (library_name, pipeline_tag, model class, a line that uses it)
KINDS = {
    "embed": ("sentence-transformers", "sentence-similarity", "SentenceTransformer",
              'vectors = model.encode(["What lowers blood pressure?", "Beta blockers lower blood pressure."])'),
    "rerank": ("sentence-transformers", "text-ranking", "CrossEncoder",
               'scores = model.predict([("What lowers blood pressure?", "Beta blockers lower blood pressure.")])'),
    "multivector": ("sentence-transformers", "sentence-similarity", "MultiVectorEncoder",
                    'token_vectors = model.encode(["What lowers blood pressure?"])'),
    "llm": ("transformers", "text-generation", "AutoModelForCausalLM", None),
    "seq2seq": ("transformers", "text2text-generation", "AutoModelForSeq2SeqLM", None),
    "clara": ("peft", "text-generation", "AutoModelForCausalLM", None),
}

ST_LOAD = '''```python
from sentence_transformers import {cls}

model = {cls}({final})
{use}
```'''

HF_LOAD = '''```python
from transformers import {cls}, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({final})
model = {cls}.from_pretrained({final})
```'''

CLARA_LOAD = '''```python
from transformers import AutoModelForCausalLM
from ragtune.clara.model import Clara

clara = Clara.load({final}, AutoModelForCausalLM.from_pretrained({base}))
print(clara.answer("What lowers blood pressure?", ["Beta blockers lower blood pressure."]))
```'''

PEFT_LOAD = '''```python
from peft import PeftModel
from transformers import {cls}, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({final})
base = {cls}.from_pretrained({base})
{resize}model = PeftModel.from_pretrained(base, {final})
```'''


def literal(value) -> str:
    """A Python string literal for a path or name in the cards' code, whatever its backslashes or quotes."""
    return json.dumps(str(value))


def model_license(path: str | Path) -> str | None:
    """The `license:` of a model folder's own card (README.md front matter), if it has one."""
    card = Path(path) / "README.md"
    if not card.is_file():
        return None
    match = re.search(r"^license:\s*(\S+)\s*$", _front_matter(card.read_text(encoding="utf-8", errors="replace")),
                      re.MULTILINE)
    return match.group(1) if match else None


def data_license(path: str | Path | None) -> str | None:
    """What the data's folder says of its license: the first line of a LICENSE file, or the line of SOURCE.md or
    README.md that names it."""
    if not path:
        return None
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    for name in ("LICENSE", "LICENSE.txt", "LICENSE.md"):
        if (folder / name).is_file():
            first = next((line.strip() for line in (folder / name).read_text(encoding="utf-8", errors="replace")
                          .splitlines() if line.strip()), "")
            return f"{first} ({folder / name})" if first else None
    for name in ("SOURCE.md", "README.md"):
        if (folder / name).is_file():
            for line in (folder / name).read_text(encoding="utf-8", errors="replace").splitlines():
                if "license" in line.lower() and not line.startswith("#"):
                    return f"{' '.join(line.split())[:300]} ({folder / name})"
    return None


def _front_matter(text: str) -> str:
    """The YAML between a card's --- lines ('' without them)."""
    front, _ = _split_card(text)
    return front[4:].rsplit("\n---", 1)[0] if front else ""


def _split_card(text: str) -> tuple[str, str]:
    """(front matter block with its --- lines, the rest) of a model card."""
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end > 0:
            cut = text.find("\n", end + 1) + 1 or len(text)
            return text[:cut], text[cut:]
    return "", text


def _sentence_transformers_card(final: Path, st_model, base: str, split: str, after: dict, primary: str) -> str:
    """sentence-transformers' card for `st_model`, its model-card data holding ragtune's after-metrics on `split`."""
    from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

    class RagtuneEvaluation(BaseEvaluator):  # names the split and the task in the model-index
        def __init__(self, name: str, description: str):
            super().__init__()
            self.name, self._description, self.primary_metric = name, description, primary

        @property
        def description(self) -> str:
            return self._description

        def __call__(self, model, output_path=None, epoch=-1, steps=-1):
            return after

    kind = "Reranking" if type(st_model).__name__ == "CrossEncoder" else "Information Retrieval"
    data = st_model.model_card_data
    data.set_evaluation_metrics(RagtuneEvaluation(re.sub(r"[^A-Za-z0-9]+", "-", split).strip("-"), kind), after)
    if not Path(base).exists():
        data.base_model = base
    try:
        st_model._create_model_card(str(final))
        return (final / "README.md").read_text(encoding="utf-8")
    except Exception as exc:  # noqa: BLE001 (card templating must never fail a finished run)
        log.warning("sentence-transformers could not write its model card (%s): ragtune's part only", exc)
        return ""


def _hub_front_matter(base: str, library: str, pipeline: str, task: str, split: str, after: dict,
                      license_: str | None, title: str) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    results = [EvalResult(task_type=pipeline, dataset_type=split, dataset_name=split, metric_type=name,
                          metric_name=name, metric_value=float(value)) for name, value in after.items()]
    data = ModelCardData(base_model=None if Path(base).exists() else base, library_name=library,
                         pipeline_tag=pipeline, tags=["ragtune", task], license=license_, model_name=title,
                         eval_results=results or None)
    return f"---\n{data.to_yaml()}\n---\n"


def write_model_card(final: Path, task: str, run_dir: Path, base: str, base_path: str, data_path: str | None,
                     comparison: Comparison, title: str, details: dict[str, str], split: str, *, st_model=None,
                     added_tokens: list[str] = (), provenance: str | None = None) -> Path:
    """Write final/README.md for a run of `task`; `st_model` is the sentence-transformers model (embed, rerank,
    multivector), whose own card stays below ragtune's part."""
    library, pipeline, cls, use = KINDS[task]
    adapter = (final / "adapter_config.json").is_file()
    base_license = model_license(base_path)
    st_card = _sentence_transformers_card(final, st_model, base, split, comparison.after, comparison.primary_metric) \
        if st_model is not None else ""
    front, st_body = _split_card(st_card)
    if not front:
        front = _hub_front_matter(base, "peft" if adapter else library, pipeline, task, split, comparison.after,
                                  base_license, title)
    lines = summary_markdown(comparison, title, details).splitlines()
    lines += ["", f"Reproduce: `ragtune train {task} -c {RunDir(run_dir).config} --overwrite` (the run's resolved "
              "config; relative data paths are read from where it ran)."]
    if provenance:
        lines += ["", f"**Base weights:** {provenance}."]
    lines += ["", "## Load", ""]
    if task == "clara":  # named adapters under adapters/, the memory tokens' rows, clara.json
        lines += ["CLaRa's adapters (compressor, generator, and query after stage e2e) and memory tokens, over their "
                  "base LM:", "", CLARA_LOAD.format(final=literal(final.resolve()), base=literal(base))]
    elif adapter:
        resize = ("base.resize_token_embeddings(len(tokenizer))  # the run added " + ", ".join(added_tokens) + "\n"
                  if added_tokens else "")
        lines += ["One step, a plain model folder: `ragtune export merge RUN_DIR`. Or load the adapter on its base "
                  "with PEFT:", "", PEFT_LOAD.format(cls=cls, final=literal(final.resolve()), base=literal(base), resize=resize)]
        if base_path != base:
            lines += ["", f"Offline on the machine that trained it, the base resolves to `{base_path}`."]
    elif use is not None:
        lines += [ST_LOAD.format(cls=cls, final=literal(final.resolve()), use=use)]
    else:
        lines += [HF_LOAD.format(cls=cls, final=literal(final.resolve()))]
    lines += ["", "## Licenses", "",
              f"- base model `{base}`: {base_license or 'not stated in its card; check its source'}",
              f"- training data `{data_path}`: {data_license(data_path) or 'not stated beside it; check its source'}"]
    text = front + "\n" + "\n".join(lines) + "\n"
    if st_body.strip():
        text += "\n---\n\n*Below: sentence-transformers' own card for this model.*\n" + st_body
    path = final / "README.md"
    write_atomic(path, text)
    return path



def _without_section(body: str, heading: str) -> str:
    """`body` less its `heading` section (up to the next heading of the same level)."""
    start = body.find(f"\n{heading}\n")
    if start < 0:
        return body
    end = body.find("\n## ", start + len(heading) + 2)
    return body[:start] + (body[end:] if end > 0 else "\n")


def write_merged_card(out: Path, adapter: Path, base: str, seq2seq: bool) -> Path:
    """README.md of `export merge`: the adapter card's proof and licenses, and load code for the merged folder."""
    task = "seq2seq" if seq2seq else "llm"
    library, pipeline, cls, _ = KINDS[task]
    card = adapter / "README.md"
    _, body = _split_card(card.read_text(encoding="utf-8", errors="replace")) if card.is_file() else ("", "")
    body = _without_section(body, "## Load").strip()
    after = {}
    for name, value in re.findall(r"^\| \**([a-z_@0-9]+)\** \| [-0-9.]+ \| ([-0-9.]+) \|", body, re.MULTILINE):
        after[name] = float(value)
    front = _hub_front_matter(base, library, pipeline, task, "held-out", after, model_license_or_none(base),
                              f"{out.name} (merged)")
    lines = [f"# {out.name}: `{adapter}` merged into `{base}`", "",
             "Written by `ragtune export merge`: the LoRA adapter's weights folded into its base, loaded unquantized, "
             "so transformers and vLLM load this folder as a plain model.", ""]
    if body:
        lines += ["## The adapter's run", "", body, ""]
    lines += ["## Load", "", HF_LOAD.format(cls=cls, final=literal(out.resolve()))]
    path = out / "README.md"
    write_atomic(path, front + "\n" + "\n".join(lines) + "\n")
    return path


def model_license_or_none(name: str) -> str | None:
    from ragtune.errors import RagtuneError
    from ragtune.models.resolve import resolve_model

    try:
        return model_license(resolve_model(name))
    except (RagtuneError, OSError):
        return None


def append_export_card(out: Path, record: dict) -> Path:
    """The export part of an `export onnx|openvino` folder's card: what was measured, what runs, how to load it."""
    card = out / "README.md"
    text = card.read_text(encoding="utf-8", errors="replace") if card.is_file() else ""
    for section in ("## ONNX export", "## OpenVINO export"):  # an export of an export keeps one
        text = _without_section(text, section)
    runtime = record.get("runtime", "onnx")
    title, package = {"onnx": ("ONNX", "onnxruntime"), "openvino": ("OpenVINO", "openvino")}[runtime]
    metric, unit = record["primary_metric"], record["unit"]
    lines = ["", f"## {title} export", "",
             f"Written by `ragtune export {runtime}` on {record['measured']} ({record['cpu']}, {record['threads']} "
             f"threads, {package} {record.get(package, '?')}). Each row is the split `{record['split']}` run "
             f"in full; a file more than {record['max_drop']} {metric} below torch fp32 is not kept."
             + (f" Static int8 was calibrated on {record['calibration']}." if record.get("calibration") else ""), "",
             f"| runs as | {metric} | {unit}/s | kept |", "|---|---:|---:|---|"]
    for row in record["rows"]:
        kept = "reference" if row["name"] == "torch fp32" else "yes" if row["passed"] else f"no (-{row['drop']:.4f})"
        lines.append(f"| {row['name']} | {row['metric']:.4f} | {row['per_second']:.1f} | {kept} |")
    chosen = "torch (it was the fastest here)" if record["chosen"] == "torch" else f"`{runtime}/{record['chosen']}`"
    cls = "CrossEncoder" if record["kind"] == "rerank" else "SentenceTransformer"
    lines += ["", f"ragtune runs {chosen} with `backend: auto` (retrieval, index, query and serve settings); "
              f"`backend: torch` or `{runtime}` forces one. In Python:", "", "```python",
              "from ragtune.models.device import choose_placement",
              f"from ragtune.models.load import {'load_cross_encoder' if cls == 'CrossEncoder' else 'load_embedder'}",
              "",
              f"model = {'load_cross_encoder' if cls == 'CrossEncoder' else 'load_embedder'}({literal(out.resolve())}, "
              "choose_placement(\"cpu\"), backend=\"auto\")  # a sentence-transformers " + cls, "```", "",
              f"`{cls}({literal(out.resolve())})` loads the torch weights of the same folder."]
    write_atomic(card, text.rstrip("\n") + "\n" + "\n".join(lines) + "\n")
    return card
