"""CLaRa's model on a tiny Llama (issue 20): only the new token rows and the adapters train, each pass uses its own
adapter, the differentiable top-k is a hard top-k forward with a non-zero gradient, a stage-1 loss falls, and a
bad shape is one clear ConfigError."""

from __future__ import annotations

import pytest
import torch

from ragtune.clara.model import Clara, ClaraShape, use_adapter
from ragtune.clara.topk import select_top_k
from ragtune.errors import ConfigError

DOCS = [["the heart pumps blood through the body"], ["asthma attacks bring a chronic cough"],
        ["calcium intake builds bone density"], ["migraine pain ruins sleep quality"]]
QUESTIONS = ["what pumps blood?", "what brings a cough?", "what builds bone?", "what ruins sleep?"]
ANSWERS = ["the heart", "asthma attacks", "calcium intake", "migraine pain"]


def _clara(tiny_llm, logit_scale: float = 1.0, **kwargs) -> Clara:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llm)
    with torch.no_grad():
        base.get_output_embeddings().weight.mul_(logit_scale)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    return Clara.from_base(base, tokenizer, ClaraShape(compress_rate=4, doc_max_length=16), r=4, alpha=8, **kwargs)


def _step(clara: Clara, optimizer) -> dict:
    optimizer.zero_grad()
    out = clara.stage_loss(DOCS, QUESTIONS, ANSWERS)
    out["loss"].backward()
    optimizer.step()
    return out


def test_only_the_new_token_rows_and_both_adapters_train(tiny_llm):
    clara = _clara(tiny_llm)
    base = clara.model.get_base_model()
    first_new = min(clara.memory_ids)
    assert len(clara.memory_ids) == 4 and clara.slot_id == first_new + 4
    before = {n: p.detach().clone() for n, p in clara.model.named_parameters()}
    trainable = [p for p in clara.model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-2)  # no weight decay: it would move the frozen rows
    for _ in range(3):
        _step(clara, optimizer)
    after = dict(clara.model.named_parameters())
    embed = next(n for n, p in after.items() if p is base.get_input_embeddings().weight)
    head = next(n for n, p in after.items() if p is base.get_output_embeddings().weight)
    for table in (embed, head):
        assert torch.equal(after[table][:first_new], before[table][:first_new]), table  # the base vocabulary
    assert not torch.equal(after[embed][first_new:], before[embed][first_new:])  # the memory tokens learned
    for adapter in ("compressor", "generator"):
        moved = [n for n in after if f"lora_B.{adapter}" in n and not torch.equal(after[n], before[n])]
        assert moved, adapter  # one step compresses with one adapter and answers with the other: both train
    frozen = [n for n in after if "lora_" not in n and n not in (embed, head)]
    assert frozen and all(torch.equal(after[n], before[n]) for n in frozen)


def test_each_pass_runs_its_own_adapter(tiny_llm):
    clara = _clara(tiny_llm)
    for name, param in clara.model.named_parameters():
        if "lora_B.compressor" in name:
            torch.nn.init.normal_(param, std=0.5)  # only the compressor adapter changes the model
    inputs = clara.document_inputs(["the heart pumps blood"])
    with torch.no_grad(), clara.model.disable_adapter():
        plain = clara.model(**inputs).logits
    with torch.no_grad():
        use_adapter(clara.model, "generator")
        generator = clara.model(**inputs).logits
        use_adapter(clara.model, "compressor")
        compressor = clara.model(**inputs).logits
    assert torch.allclose(generator, plain, atol=1e-6)  # the generator adapter (still zero) leaves the base as is
    assert not torch.allclose(compressor, plain, atol=1e-3)
    memory, _ = clara.compress(["the heart pumps blood"])  # compress turns the compressor on by itself
    use_adapter(clara.model, "generator")
    again, _ = clara.compress(["the heart pumps blood"])
    assert torch.equal(memory, again)


def test_the_differentiable_top_k_is_a_hard_top_k_forward_with_a_gradient():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.7], [0.5, 0.2, 0.8, 0.1]], requires_grad=True)
    selection = select_top_k(scores, 2, temperature=0.1)
    expected = torch.tensor([[[0, 1, 0, 0], [0, 0, 0, 1]], [[0, 0, 1, 0], [1, 0, 0, 0]]], dtype=torch.float32)
    assert torch.equal(selection.detach(), expected)
    values = torch.arange(8, dtype=torch.float32).reshape(1, 4, 2).repeat(2, 1, 1)
    picked = selection @ values  # (2, 2, 2): the chosen candidates, best first
    assert torch.equal(picked.detach()[0], values[0, [1, 3]])
    picked.sum().backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="top_k"):
        select_top_k(scores, 5)


def test_a_stage_1_loss_falls_and_the_answer_comes_from_the_memory_vectors(tiny_llm):
    # a random tiny LM's frozen head gives logits of about +-0.1, so no hidden state can make it confident (the CE
    # floor is near ln(vocab)); a trained LM's head is larger, as it is made here
    clara = _clara(tiny_llm, logit_scale=30.0)
    optimizer = torch.optim.Adam([p for p in clara.model.parameters() if p.requires_grad], lr=1e-2)
    first = _step(clara, optimizer)
    for _ in range(40):
        last = _step(clara, optimizer)
    assert float(last["ce"]) < 0.5 * float(first["ce"]), (float(first["ce"]), float(last["ce"]))
    same = ["what is it about?"] * len(DOCS)  # one question for all: only the memory vectors tell the answers apart
    for _ in range(40):
        optimizer.zero_grad()
        clara.stage_loss(DOCS, same, ANSWERS)["loss"].backward()
        optimizer.step()
    with torch.no_grad():
        matched = float(clara.stage_loss(DOCS, same, ANSWERS)["ce"])
        swapped = float(clara.stage_loss(DOCS[1:] + DOCS[:1], same, ANSWERS)["ce"])
    assert swapped > matched + 1.0, (matched, swapped)
    assert isinstance(clara.answer(QUESTIONS[0], DOCS[0], max_new_tokens=4), str)


def test_a_bad_shape_or_a_base_without_room_is_one_clear_error(tiny_llm):
    with pytest.raises(ConfigError, match="compress_rate: 5 does not divide doc_max_length \\(16\\)"):
        ClaraShape(compress_rate=5, doc_max_length=16)
    with pytest.raises(ConfigError, match="positive integer"):
        ClaraShape(compress_rate=0)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_llm)
    base.config.max_position_embeddings = 16
    with pytest.raises(ConfigError, match="do not fit the base model's 16 positions"):
        Clara.from_base(base, AutoTokenizer.from_pretrained(tiny_llm), ClaraShape(compress_rate=4, doc_max_length=16))
