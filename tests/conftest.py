"""Shared fixtures: no network, tiny models built from config, toy data, and an in-process CLI runner."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"

TOPICS = {
    "heart": ["cardiac arrest", "blood pressure", "artery plaque", "heart rhythm", "cholesterol levels"],
    "lung": ["asthma attack", "lung capacity", "smoking damage", "oxygen saturation", "chronic cough"],
    "brain": ["memory loss", "stroke recovery", "migraine pain", "neuron growth", "sleep quality"],
    "bone": ["bone density", "fracture healing", "joint pain", "calcium intake", "spine posture"],
    "skin": ["skin rash", "sun exposure", "wound healing", "acne treatment", "skin cancer"],
    "gut": ["gut bacteria", "stomach ulcer", "digestion speed", "liver enzymes", "food allergy"],
}


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA; without it they are skipped, not failed."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """The network is impossible: hub offline, a private HF home, no progress bars, no debug tracebacks."""
    home = tmp_path_factory.getbasetemp() / "hf_home"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path_factory.getbasetemp() / "ragtune_cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.delenv("RAGTUNE_DEBUG", raising=False)
    import huggingface_hub.constants as hub  # read its environment at import, perhaps before this fixture ran

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)


@pytest.fixture(autouse=True, scope="session")
def _fp32_on_cpu():
    """`precision: auto` on a bf16 CPU times fp32 against bf16 and keeps the faster, so the same test would run in
    bf16 on one machine and fp32 on the next. Tests run fp32, exactly, and so do the CLI subprocesses they start
    (an environment variable reaches those; a monkeypatch would not). Session-wide, so that a test's own
    `monkeypatch.undo()` cannot lift it half way; test_precision_probe covers the choice."""
    with pytest.MonkeyPatch.context() as session:
        session.setenv("RAGTUNE_CPU_BF16", "0")
        yield


def toy_pairs(n_per_topic: int = 8, seed: int = 0) -> list[dict]:
    """Query/document pairs where a query shares its topic's words with its document."""
    rng = random.Random(seed)
    rows = []
    for topic, phrases in TOPICS.items():
        for i in range(n_per_topic):
            phrase = phrases[i % len(phrases)]
            rows.append({"query": f"what about {phrase} number {i} in {topic}",
                         "document": f"a study of {topic} {phrase} finds {rng.choice(phrases)} matters {i}"})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


_KILL_AT_SAVE = """
import os, signal, sys
from ragtune.train import callbacks
original = callbacks.RunLogCallback.on_save
def on_save(self, args, state, control, **kw):
    original(self, args, state, control, **kw)
    if state.global_step == 2:
        os.kill(os.getpid(), signal.SIGKILL)
callbacks.RunLogCallback.on_save = on_save
from ragtune.cli.main import run
sys.exit(run(sys.argv[1:]))
"""


def run_killed_at_step_2(args: list[str], run_dir: Path) -> None:
    """Run the CLI in a subprocess that SIGKILLs itself right after saving checkpoint-2; check what it left."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _KILL_AT_SAVE, *map(str, args)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (run_dir / "checkpoints" / "checkpoint-2" / ".complete").exists() and not (run_dir / "final").exists()


def _build_tiny_embedder(path: Path) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    texts = [r["query"] + " " + r["document"] for r in toy_pairs(20)] + ["hello world passage query"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=400, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    hf_dir = path / "hf"
    BertTokenizerFast(tokenizer_object=tok, model_max_length=64).save_pretrained(hf_dir)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "mean")], device="cpu")
    out = path / "tiny-embedder"
    model.save_pretrained(str(out))
    return out


def _build_tiny_cross_encoder(embedder: Path, path: Path) -> Path:
    """A CrossEncoder (2-layer BERT + a new scoring head) started from the tiny embedder's encoder."""
    from sentence_transformers import CrossEncoder

    torch_seed()
    model = CrossEncoder(str(embedder), num_labels=1, device="cpu")
    out = path / "tiny-cross-encoder"
    model.save_pretrained(str(out))
    return out


def train_bpe_tokenizer(texts: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on `texts`, wrapped for transformers, with <s> </s> <pad> <unk>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=512)


LLM_TEXTS = [f"{q['query']} {q['document']}" for q in toy_pairs(20)] + [
    "### Instruction: ### Response: answer the question yes no maybe user assistant system",
    "Human: hello Assistant: hi there, how can I help you today?"]


def _build_tiny_llm(path: Path) -> Path:
    """A 2-layer Llama-style causal LM (hidden 32) with its own BPE tokenizer and no chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_bpe_tokenizer(LLM_TEXTS)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch_seed()
    out = path / "tiny-llm"
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _build_tiny_seq2seq(path: Path) -> Path:
    """A 2-layer T5-style encoder-decoder (d_model 32) with its own BPE tokenizer."""
    from transformers import T5Config, T5ForConditionalGeneration

    texts = LLM_TEXTS + ["a man rides a bike", "ein Mann fährt Fahrrad", "un homme fait du vélo",
                         "two dogs play in the snow", "zwei Hunde spielen im Schnee"]
    tokenizer = train_bpe_tokenizer(texts)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=2, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id)
    torch_seed()
    out = path / "tiny-seq2seq"
    T5ForConditionalGeneration(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def lift_first_evaluation(monkeypatch, recipe_module, factory: str, metric: str = "ndcg@10") -> None:
    """Make step 2 the best checkpoint by construction: the first in-training evaluation scores `metric` 2.0 higher.

    Which step a real tiny run peaks at depends on the CPU's float arithmetic, so best-checkpoint tests script it."""
    real_factory = getattr(recipe_module, factory)

    def lifted_factory(*args, **kwargs):
        evaluator = real_factory(*args, **kwargs)
        measure, calls = type(evaluator).__call__, []

        def lifted(self, model, *a, **kw):
            metrics = dict(measure(self, model, *a, **kw))
            calls.append(metrics[metric])
            if len(calls) == 1:
                metrics[metric] += 2.0  # above any real score (at most 1), even a tied one
            return metrics

        evaluator.__class__ = type("LiftedEvaluator", (type(evaluator),), {"__call__": lifted})
        return evaluator

    monkeypatch.setattr(recipe_module, factory, lifted_factory)


def torch_seed(seed: int = 0) -> None:
    import torch

    torch.manual_seed(seed)


def _copy_of(master: Path, dest: Path) -> str:
    """A fresh copy of a session-built model, so that a test may change its files."""
    shutil.copytree(master, dest)
    return str(dest)


@pytest.fixture(scope="session")
def _tiny_embedder_master(tmp_path_factory) -> Path:
    return _build_tiny_embedder(tmp_path_factory.mktemp("models"))


@pytest.fixture
def tiny_embedder(_tiny_embedder_master, tmp_path) -> str:
    """A 2-layer BERT (hidden 32) sentence-transformer with its own trained tokenizer; each test gets a copy."""
    return _copy_of(_tiny_embedder_master, tmp_path / "tiny-embedder")


@pytest.fixture(scope="session")
def _tiny_cross_encoder_master(_tiny_embedder_master, tmp_path_factory) -> Path:
    return _build_tiny_cross_encoder(_tiny_embedder_master, tmp_path_factory.mktemp("models"))


@pytest.fixture
def tiny_cross_encoder(_tiny_cross_encoder_master, tmp_path) -> str:
    """A 2-layer BERT cross-encoder with a randomly initialised scoring head; each test gets a copy."""
    return _copy_of(_tiny_cross_encoder_master, tmp_path / "tiny-cross-encoder")


@pytest.fixture(scope="session")
def _tiny_llm_master(tmp_path_factory) -> Path:
    return _build_tiny_llm(tmp_path_factory.mktemp("models"))


@pytest.fixture
def tiny_llm(_tiny_llm_master, tmp_path) -> str:
    """A 2-layer Llama-style causal LM with a BPE tokenizer trained in the fixture; each test gets a copy."""
    return _copy_of(_tiny_llm_master, tmp_path / "tiny-llm")


@pytest.fixture(scope="session")
def _tiny_seq2seq_master(tmp_path_factory) -> Path:
    return _build_tiny_seq2seq(tmp_path_factory.mktemp("models"))


@pytest.fixture
def tiny_seq2seq(_tiny_seq2seq_master, tmp_path) -> str:
    """A 2-layer T5-style seq2seq model with a BPE tokenizer trained in the fixture; each test gets a copy."""
    return _copy_of(_tiny_seq2seq_master, tmp_path / "tiny-seq2seq")


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", toy_pairs())


@pytest.fixture
def cli(capsys):
    """Run the real CLI in-process; return (exit code, stdout, stderr)."""
    from ragtune.cli.main import run

    def invoke(*args: str) -> tuple[int, str, str]:
        code = run([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside the repo")
    return SHARED_DATA


def tiny_train_overrides(model: str, out: Path) -> list[str]:
    """Overrides that make `train embed` take seconds on the tiny model."""
    return [f"model.name={model}", f"output.dir={out}", "train.max_steps=4", "train.eval_steps=2",
            "train.save_steps=2", "train.per_device_train_batch_size=8", "train.logging_steps=1",
            "eval.batch_size=16", "train.learning_rate=1e-3"]
