"""`ragtune train seq2seq` on a tiny T5-style model, language codes, and the text metrics."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.conftest import write_jsonl

PAIRS = [{"source_text": f"a man rides a bike {i}", "target_text": f"ein Mann fährt Fahrrad {i}"} for i in range(24)]


def s2s_overrides(model: str, run_dir) -> list[str]:
    return [f"model.name={model}", f"output.dir={run_dir}", "train.max_steps=4", "train.eval_steps=2",
            "train.save_steps=2", "train.logging_steps=1", "train.per_device_train_batch_size=4",
            "eval.generation_samples=2", "eval.max_new_tokens=6", "data.max_eval_samples=4",
            "train.learning_rate=1e-3", "--allow-regression"]


@pytest.mark.parametrize("method", ["full", "lora"])
def test_seq2seq_trains_on_jsonl(cli, tiny_seq2seq, tmp_path, method):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "seq2seq", f"data.train={data}", f"method={method}",
                       *s2s_overrides(tiny_seq2seq, run_dir))
    assert code == 0, err
    after = json.loads((run_dir / "eval_after.json").read_text())["metrics"]
    assert {"perplexity", "bleu", "chrf"} <= set(after)
    assert json.loads((run_dir / "eval_before.json").read_text())["metrics"]["perplexity"] > 0
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert samples and samples[0]["reference"].startswith("ein Mann")
    marker = "adapter_config.json" if method == "lora" else "config.json"
    assert (run_dir / "final" / marker).is_file()


def test_seq2seq_trains_on_line_aligned_files(cli, tiny_seq2seq, tmp_path):
    source, target = tmp_path / "train.en.gz", tmp_path / "train.de.gz"
    source.write_bytes(gzip.compress("".join(p["source_text"] + "\n" for p in PAIRS).encode()))
    target.write_bytes(gzip.compress("".join(p["target_text"] + "\n" for p in PAIRS).encode()))
    code, _, err = cli("train", "seq2seq", f"data.train={source}", f"data.train_target={target}",
                       "source_prefix=translate {source_lang} to {target_lang}: ", "source_lang=en", "target_lang=de",
                       *s2s_overrides(tiny_seq2seq, tmp_path / "run"))
    assert code == 0, err


def test_line_aligned_files_must_match(cli, tiny_seq2seq, tmp_path):
    source, target = tmp_path / "a.en", tmp_path / "a.de"
    source.write_text("one\ntwo\n")
    target.write_text("eins\n")
    code, _, err = cli("train", "seq2seq", f"data.train={source}", f"data.train_target={target}",
                       *s2s_overrides(tiny_seq2seq, tmp_path / "run"))
    assert code == 2 and "2 lines" in err and "1" in err and len(err.strip().splitlines()) == 1


def _language_tokenizer(tiny_seq2seq):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_seq2seq)
    tokenizer.add_special_tokens({"additional_special_tokens": ["eng_Latn", "deu_Latn", "fra_Latn", "__de__"]})
    return tokenizer


def test_language_codes_force_the_target_bos(tiny_seq2seq):
    from ragtune.data.seq2seq import Encoder, Pair

    tokenizer = _language_tokenizer(tiny_seq2seq)
    encoder = Encoder(tokenizer, "m2m_100")
    pair = Pair("a man", "ein Mann", "eng_Latn", "deu_Latn", "x:1")
    encoder.check_languages([pair])
    assert encoder.forced_bos(pair) == tokenizer.convert_tokens_to_ids("deu_Latn")
    m2m = Pair("a man", "ein Mann", "eng_Latn", "de", "x:1")
    assert encoder.forced_bos(m2m) == tokenizer.convert_tokens_to_ids("__de__")  # M2M100 spells de as __de__
    assert Encoder(tokenizer, "t5").forced_bos(pair) is None  # models without codes use source_prefix instead


def test_unknown_language_code_is_named_with_a_suggestion(tiny_seq2seq):
    from ragtune.data.seq2seq import Encoder, Pair
    from ragtune.errors import ConfigError

    encoder = Encoder(_language_tokenizer(tiny_seq2seq), "nllb")
    with pytest.raises(ConfigError, match=r"unknown language code 'deu_Latm'.*did you mean 'deu_Latn'"):
        encoder.check_languages([Pair("a", "b", "eng_Latn", "deu_Latm", "x:1")])
    with pytest.raises(ConfigError, match=r"x:1: this model uses language codes"):
        encoder.check_languages([Pair("a", "b", None, None, "x:1")])


def test_language_code_shape_is_checked_in_the_config(cli, tiny_seq2seq, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    code, _, err = cli("train", "seq2seq", f"data.train={data}", "target_lang=German!",
                       *s2s_overrides(tiny_seq2seq, tmp_path / "run"))
    assert code == 2 and "target_lang" in err and "not a language code" in err


def test_text_metrics_by_hand():
    from ragtune.eval.text_metrics import exact_match, predicted_label, text_metrics, token_f1

    assert exact_match("The Heart.", "heart") == 1.0 and exact_match("a lung", "heart") == 0.0
    assert token_f1("the big heart", "heart big muscle") == pytest.approx(2 * (2 / 2) * (2 / 3) / (2 / 2 + 2 / 3))
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0
    assert predicted_label("Maybe, but yes in part", ["yes", "no", "maybe"]) == "maybe"
    assert predicted_label("nothing here", ["yes", "no"]) is None
    metrics = text_metrics(["yes it is", "no", "perhaps"], ["yes", "no", "maybe"],
                           ["accuracy", "exact_match", "bleu", "chrf", "rouge_l"], labels=["yes", "no", "maybe"])
    assert metrics["accuracy"] == pytest.approx(2 / 3) and metrics["exact_match"] == pytest.approx(1 / 3)
    assert metrics["rouge_l"] == pytest.approx((0.5 + 1 + 0) / 3)
    import sacrebleu

    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(["yes it is", "no", "perhaps"],
                                                                  [["yes", "no", "maybe"]]).score, abs=1e-4)
