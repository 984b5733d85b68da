"""`scripts/examples/run_clm.py` end to end on tiny Llama and Qwen2 models and a tiny English corpus (a byte-level BPE
trained by `scripts/examples/train_tokenizers.py`): from scratch (EA and vanilla twins from the same weights) and from
a vanilla checkpoint, perplexities, resuming, keeping the best evaluation's model, nested JSON texts, and the
bad-input errors before training."""

import json
import math
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, Qwen2Config, Qwen2ForCausalLM, pipeline

from ea_hf import EALlamaForCausalLM, EAQwen2ForCausalLM
from scripts.examples.run_clm import ClmModelArguments, DataTrainingArguments, build_from_scratch, main, parse_args
from scripts.examples.train_tokenizers import train_clm_tokenizer


pytestmark = pytest.mark.usefixtures("one_thread", "restore_library_logging")

WORDS = "the a cat dog sees eats likes reads house river book tree friend city and".split()


def sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))).capitalize() + "." for _ in range(count)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """The splits as plain text and as JSON lines of `{"translation": {"en": ...}}` records; a tokenizer; a tiny
    vanilla Llama config."""
    folder = tmp_path_factory.mktemp("clm-data")
    files = {}
    for i, (split, count) in enumerate({"train": 120, "validation": 30, "test": 30}.items()):
        files[split] = folder / f"{split}.txt"
        files[split].write_text("\n".join(sentences(count, i)) + "\n", encoding="utf-8")
        records = (json.dumps({"translation": {"en": text, "es": "x"}}) + "\n" for text in sentences(count, i))
        files[f"json_{split}"] = folder / f"{split}.jsonl"
        files[f"json_{split}"].write_text("".join(records), encoding="utf-8")
    files["tokenizer"] = Path(train_clm_tokenizer(sentences(120, 0), folder / "tokenizer", vocab_size=300))
    files["config"] = folder / "llama-config"
    LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64).save_pretrained(files["config"])  # fmt: skip
    return files


def run(corpus, output_dir, *extra, kind="", actions=("--do_train", "--do_eval", "--do_predict")):
    return main(
        [
            *actions,
            "--tokenizer_name", str(corpus["tokenizer"]),
            "--train_file", str(corpus[kind + "train"]),
            "--validation_file", str(corpus[kind + "validation"]),
            "--test_file", str(corpus[kind + "test"]),
            "--block_size", "32",
            "--per_device_train_batch_size", "4",
            "--max_steps", "6",
            "--learning_rate", "3e-3",
            "--logging_steps", "2",
            "--output_dir", str(output_dir),
            "--report_to", "none",
            "--use_cpu", "true",
            "--dataloader_num_workers", "0",
            *extra,
        ]
    )  # fmt: skip


def test_from_scratch_ea_and_vanilla_twins(corpus, tmp_path):
    """From a vanilla config: the EA model starts from the vanilla twin's weights (same seed) plus identity convs, its
    vocabulary from the tokenizer; training lowers the validation and test perplexities it reports."""
    tokenizer = AutoTokenizer.from_pretrained(corpus["tokenizer"])

    def twin(*args):
        arguments = ["--config_name", str(corpus["config"]), "--tokenizer_name", str(corpus["tokenizer"]), *args]
        model_args = parse_args([*arguments, "--train_file", str(corpus["train"]), "--output_dir", str(tmp_path)])[0]
        return build_from_scratch(model_args, tokenizer, seed=3)

    ea, vanilla = twin("--ea_alpha", "0.5"), twin("--model_type", "vanilla")
    assert isinstance(ea, EALlamaForCausalLM) and type(vanilla).__name__ == "LlamaForCausalLM"
    assert ea.config.vocab_size == len(tokenizer) and ea.config.ea_alpha == 0.5 and ea.config.pad_token_id == 0
    shared = vanilla.state_dict()
    for name, tensor in ea.state_dict().items():
        assert ".evolving_attention." in name or torch.equal(tensor, shared[name]), name

    from_scratch = ["--config_name", str(corpus["config"]), "--seed", "3"]
    untrained = run(corpus, tmp_path / "untrained", *from_scratch, actions=("--do_eval", "--do_predict"))
    trained = run(corpus, tmp_path / "trained", *from_scratch)
    for results in (untrained, trained):
        assert results["perplexity"] == pytest.approx(math.exp(results["eval_loss"]))
        assert results["predict_perplexity"] == pytest.approx(math.exp(results["predict_loss"]))
    assert (
        trained["perplexity"] < untrained["perplexity"]
        and trained["predict_perplexity"] < untrained["predict_perplexity"]
    )
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path / "trained"), EALlamaForCausalLM)


def test_from_a_vanilla_qwen2_checkpoint_with_json_texts_and_resume(corpus, tmp_path):
    checkpoint = tmp_path / "qwen2"
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2)  # fmt: skip
    Qwen2ForCausalLM(config).save_pretrained(checkpoint)
    args = ["--model_name_or_path", str(checkpoint), "--text_column", "translation.en", "--save_steps", "3"]
    output_dir = tmp_path / "out"
    first = run(corpus, output_dir, *args, kind="json_")
    assert isinstance(AutoModelForCausalLM.from_pretrained(output_dir), EAQwen2ForCausalLM)
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and (output_dir / "checkpoint-3").is_dir()
    # a run killed after checkpoint 3 resumes from it and ends where the uninterrupted run ended
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    (resumed_dir / "checkpoint-3").symlink_to(output_dir / "checkpoint-3", target_is_directory=True)
    resumed = run(corpus, resumed_dir, *args, kind="json_")
    assert resumed["eval_loss"] == pytest.approx(first["eval_loss"], rel=1e-4)
    generator = pipeline("text-generation", model=str(output_dir))
    assert generator("The cat", max_new_tokens=4, do_sample=False)[0]["generated_text"].startswith("The cat")


def test_bad_input_is_refused_before_training(corpus, tmp_path):
    with pytest.raises(ValueError, match="from scratch needs --config_name and --tokenizer_name"):
        ClmModelArguments(config_name=str(corpus["config"]))
    with pytest.raises(ValueError, match="should be a .txt, .csv, .json or .jsonl file"):
        DataTrainingArguments(train_file="data.parquet")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(corpus, tmp_path / "a", "--config_name", str(corpus["config"]), "--test_file", "missing.txt")
    with pytest.raises(ValueError, match="no 'translation.de' column"):
        run(corpus, tmp_path / "b", "--config_name", str(corpus["config"]), "--text_column", "translation.de",
            kind="json_")  # fmt: skip
    with pytest.raises(ValueError, match="--block_size 128 is longer than the model's 64 positions"):
        run(corpus, tmp_path / "c", "--config_name", str(corpus["config"]), "--block_size", "128")
    with pytest.raises(ValueError, match="--ea_alpha with --model_type vanilla"):
        run(corpus, tmp_path / "d", "--config_name", str(corpus["config"]), "--model_type", "vanilla",
            "--ea_alpha", "0.2")  # fmt: skip


def test_the_best_evaluations_model_is_kept_and_scored(corpus, tmp_path):
    """With `--load_best_model_at_end` (what the LM study runs): the validation perplexity reported is the best one
    evaluated during training, and the saved model is that checkpoint's."""
    keep_best = ["--config_name", str(corpus["config"]), "--eval_strategy", "steps", "--eval_steps", "2"]
    keep_best += ["--save_steps", "2", "--save_total_limit", "1", "--load_best_model_at_end", "true"]
    diverges = ["--learning_rate", "1.0", "--lr_scheduler_type", "constant"]  # the last evaluation is not the best
    results = run(corpus, tmp_path / "out", *keep_best, *diverges)
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    losses = [log["eval_loss"] for log in state["log_history"] if "eval_loss" in log]  # at steps 2, 4 and 6
    assert len(losses) == 3 and losses[-1] > min(losses)
    assert results["eval_loss"] == pytest.approx(min(losses), rel=1e-5)
    best = AutoModelForCausalLM.from_pretrained(Path(state["best_model_checkpoint"]))
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    kept = saved.state_dict()
    assert all(torch.equal(tensor, kept[name]) for name, tensor in best.state_dict().items())
