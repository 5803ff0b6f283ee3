"""`precision: auto` on a CPU: decided by timing the model, cached per CPU, torch, workload and model shape."""

from __future__ import annotations

import json

import pytest

from ragtune.models import precision_probe
from ragtune.models.device import Placement, choose_placement, settle


@pytest.fixture(autouse=True)
def _fresh_verdicts(monkeypatch, tmp_path):
    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(precision_probe, "_VERDICTS", {})


def stub_timer(seconds: dict[str, float], calls: list[str] | None = None):
    def run(precision: str) -> float:
        if calls is not None:
            calls.append(precision)
        return seconds[precision]

    return run


@pytest.fixture
def module(tiny_embedder):
    from ragtune.models.load import load_embedder

    return precision_probe.transformer_of(load_embedder(tiny_embedder, Placement("cpu", "fp32", "test")))


def test_the_faster_precision_wins_and_the_verdict_is_cached(module, tmp_path):
    calls: list[str] = []
    verdict = precision_probe.probe(module, "encode", stub_timer({"fp32": 1.0, "bf16": 0.5}, calls))
    assert verdict.precision == "bf16" and verdict.speedup == pytest.approx(2.0) and not verdict.cached
    assert calls.count("fp32") == calls.count("bf16") == 1 + precision_probe.REPEATS  # one warm-up each
    assert "bf16: 2.00x faster than fp32 here for encode (measured " in verdict.reason("encode")
    stored = json.loads((tmp_path / "cache" / "precision.json").read_text())
    key = precision_probe.cache_key(module, "encode")
    assert stored[key]["precision"] == "bf16" and "encode" in key and "bert/32/2" in key
    precision_probe._VERDICTS.clear()  # a new process: the verdict comes from the file, nothing is timed

    def never(precision: str) -> float:
        raise AssertionError("timed again")

    again = precision_probe.probe(module, "encode", never)
    assert again.precision == "bf16" and again.cached and "cached verdict" in again.reason("encode")


def test_bf16_slower_or_within_noise_keeps_fp32(module):
    slower = precision_probe.probe(module, "rerank", stub_timer({"fp32": 1.0, "bf16": 1.3}))
    assert slower.precision == "fp32" and "0.77x of fp32's speed" in slower.reason("rerank")
    noise = precision_probe.probe(module, "train", stub_timer({"fp32": 1.0, "bf16": 0.98}))
    assert noise.precision == "fp32"  # 1.02x is below MIN_SPEEDUP


def test_each_workload_and_model_shape_is_measured_apart(module, tiny_cross_encoder):
    from ragtune.models.load import load_cross_encoder

    calls: list[str] = []
    timer = stub_timer({"fp32": 1.0, "bf16": 0.5}, calls)
    precision_probe.probe(module, "encode", timer)
    precision_probe.probe(module, "train", timer)
    cross = precision_probe.transformer_of(load_cross_encoder(tiny_cross_encoder, Placement("cpu", "fp32", "t")))
    precision_probe.probe(cross, "rerank", timer)
    assert len(calls) == 3 * 2 * (1 + precision_probe.REPEATS)
    keys = {precision_probe.cache_key(module, w) for w in ("encode", "train")}
    assert len(keys | {precision_probe.cache_key(cross, "rerank")}) == 3


def test_a_damaged_cache_is_measured_again(module, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "precision.json").write_text("{not json")
    verdict = precision_probe.probe(module, "encode", stub_timer({"fp32": 1.0, "bf16": 2.0}))
    assert verdict.precision == "fp32" and not verdict.cached
    assert json.loads((tmp_path / "cache" / "precision.json").read_text())


def test_auto_on_a_bf16_cpu_is_settled_by_the_probe(module, monkeypatch):
    import ragtune.models.device as device

    monkeypatch.setattr(device, "cpu_supports_bf16", lambda: True)
    placement = choose_placement("cpu", "auto")
    assert placement.measure and placement.precision == "fp32"
    monkeypatch.setattr(precision_probe, "model_timer", lambda m, w: stub_timer({"fp32": 3.0, "bf16": 1.0}))
    settled = settle(placement, module, "train")
    assert settled.precision == "bf16" and not settled.measure and "3.00x faster" in settled.reason
    forced = choose_placement("cpu", "fp32")
    assert settle(forced, module, "train") is forced  # a precision the config names is never second-guessed
    monkeypatch.setattr(device, "cpu_supports_bf16", lambda: False)
    assert not choose_placement("cpu", "auto").measure


@pytest.mark.parametrize("workload", ["train", "encode", "rerank"])
def test_the_real_timer_runs_the_model_in_both_precisions(module, workload):
    import torch

    run = precision_probe.model_timer(module, workload)
    assert run("fp32") > 0 and run("bf16") > 0
    assert all(p.grad is None for p in module.parameters())  # the training probe leaves no gradients behind
    assert next(module.parameters()).dtype == torch.float32  # inference probes time a bf16 copy, not the model


def test_the_cpu_summary_names_its_instruction_sets():
    from ragtune.models.cpu import CPU_FEATURES, cpu_features, cpu_summary

    summary = cpu_summary()
    assert set(cpu_features()) == set(CPU_FEATURES)
    assert all(name in summary for name in CPU_FEATURES)


def test_the_environment_can_keep_a_bf16_cpu_in_fp32(monkeypatch):
    import ragtune.models.device as device

    monkeypatch.setattr(device, "cpu_features", lambda: {"BF16": True, "AMX": False})
    monkeypatch.setattr(device.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.delenv("RAGTUNE_CPU_BF16")
    assert device.cpu_supports_bf16()
    monkeypatch.setenv("RAGTUNE_CPU_BF16", "0")
    assert not device.cpu_supports_bf16() and not choose_placement("cpu", "auto").measure
