"""`scripts/examples/run_translation.py` end to end on tiny vanilla Marian and T5 checkpoints (d_model 16, one layer a
side, SentencePiece tokenizers trained by `scripts/examples/train_tokenizers.py`) and tiny EN-ES JSON-lines files: EA
(converted on the fly) and vanilla models, BLEU/chrF results and generated predictions, a T5 source prefix, argument
files, and the bad-input errors before training."""

import json
import random
from pathlib import Path

import datasets
import pytest
import torch
import transformers
from huggingface_hub import ModelCard
from transformers import MarianConfig, MarianMTModel, T5Config, T5ForConditionalGeneration

from scripts.examples import run_translation
from scripts.examples.run_translation import DataTrainingArguments, main, parse_args
from scripts.examples.train_tokenizers import train_marian_tokenizer, train_t5_tokenizer
from scripts.release import push_to_hub


pytestmark = [
    pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses"),
    pytest.mark.usefixtures("one_thread", "restore_library_logging"),
]

NOUNS = [("cat", "gato"), ("dog", "perro"), ("house", "casa"), ("river", "río"), ("book", "libro"),
         ("tree", "árbol"), ("friend", "amigo"), ("city", "ciudad")]  # fmt: skip
VERBS = [("sees", "ve"), ("eats", "come"), ("likes", "quiere"), ("reads", "lee")]


def make_pairs(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        (n1, m1), (n2, m2) = rng.sample(NOUNS, 2)
        v, w = rng.choice(VERBS)
        rows.append({"translation": {"en": f"The {n1} {v} the {n2}.", "es": f"El {m1} {w} el {m2}."}})
    return rows


def write_json_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("translation-data")
    counts = {"train": 40, "validation": 8, "test": 6}
    return {
        split: write_json_lines(folder / f"{split}.jsonl", make_pairs(n, i))
        for i, (split, n) in enumerate(counts.items())
    }


def texts(rows: list[dict], lang: str) -> list[str]:
    return [row["translation"][lang] for row in rows]


@pytest.fixture(scope="module")
def marian_checkpoint(tmp_path_factory) -> Path:
    """A tiny vanilla MarianMTModel with a Marian tokenizer trained on the training pairs."""
    folder = tmp_path_factory.mktemp("tiny-marian")
    rows = make_pairs(40, 0)
    train_marian_tokenizer(texts(rows, "en"), texts(rows, "es"), folder, vocab_size=60, source_lang="en",
                           target_lang="es")  # fmt: skip
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    config = MarianConfig(
        vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
        pad_token_id=vocab["<pad>"], eos_token_id=0, decoder_start_token_id=vocab["<pad>"], forced_eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    MarianMTModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def t5_checkpoint(tmp_path_factory) -> Path:
    """A tiny vanilla T5ForConditionalGeneration with a T5 tokenizer trained on both sides of the training pairs."""
    folder = tmp_path_factory.mktemp("tiny-t5")
    rows = make_pairs(40, 0)
    train_t5_tokenizer(texts(rows, "en") + texts(rows, "es") + ["translate English to Spanish:"], folder, 80, 4)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    return folder


def translation_args(checkpoint, output_dir, *extra, data=None, train="train", validation="validation", test=None):
    """Arguments of a small run on a tiny model (2 steps)."""
    argv = [
        "--model_name_or_path", str(checkpoint), "--output_dir", str(output_dir),
        "--cache_dir", str(Path(output_dir).parent / "cache"), "--source_lang", "en", "--target_lang", "es",
        "--max_source_length", "16", "--max_target_length", "16", "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "8", "--learning_rate", "1e-3", "--max_steps", "2",
        "--report_to", "none", "--disable_tqdm", "true", "--use_cpu", "true", "--dataloader_pin_memory", "false",
    ]  # fmt: skip
    for flag, split in (("--train_file", train), ("--validation_file", validation), ("--test_file", test)):
        if split is not None and split in data:
            argv += [flag, str(data[split])]
    return argv + list(extra)


def results(output_dir: Path, split: str) -> dict:
    return json.loads((output_dir / f"{split}_results.json").read_text())


def test_ea_marian_end_to_end(marian_checkpoint, data, tmp_path):
    output_dir = tmp_path / "out"
    argv = translation_args(
        marian_checkpoint, output_dir, "--do_train", "--do_eval", "--do_predict", "--predict_with_generate",
        "--ea_alpha", "0.3", "--num_beams", "2", test="test", data=data,
    )  # fmt: skip
    returned = main(argv)
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "ea_marian" and config["ea_alpha"] == 0.3
    assert config["auto_map"]["AutoModelForSeq2SeqLM"].endswith("EAMarianMTModel")
    train, evaluation, predict, combined = (results(output_dir, s) for s in ("train", "eval", "predict", "all"))
    assert train["train_samples"] == 40 and "train_loss" in train
    assert evaluation["eval_samples"] == 8 and 0.0 <= evaluation["eval_bleu"] <= 100.0
    assert 0.0 <= evaluation["eval_chrf"] <= 100.0 and 0.0 <= evaluation["eval_gen_len"] <= 16
    assert predict["predict_samples"] == 6 and {"predict_bleu", "predict_chrf", "predict_gen_len"} <= set(predict)
    assert combined == {**train, **evaluation, **predict} and returned == combined
    assert len((output_dir / "generated_predictions.txt").read_text(encoding="utf-8").splitlines()) == 6
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 2
    card = (output_dir / "README.md").read_text()
    assert "evolving-attention" in card and "- es" in card  # the languages


def test_vanilla_marian(marian_checkpoint, data, tmp_path):
    output_dir = tmp_path / "out"
    main(translation_args(marian_checkpoint, output_dir, "--do_train", "--model_type", "vanilla", data=data))
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "marian" and "auto_map" not in config
    assert not (output_dir / "eval_results.json").exists()


def test_t5_with_source_prefix(t5_checkpoint, data, tmp_path, caplog):
    output_dir = tmp_path / "out"
    argv = translation_args(
        t5_checkpoint, output_dir, "--do_train", "--do_eval", "--predict_with_generate",
        "--source_prefix", "translate English to Spanish: ", data=data,
    )  # fmt: skip
    metrics = main(argv)
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "ea_t5" and config["auto_map"]["AutoModelForSeq2SeqLM"].endswith(
        "EAT5ForConditionalGeneration"
    )
    assert {"eval_bleu", "eval_chrf", "eval_gen_len"} <= set(metrics)
    assert "didn't provide a source prefix" not in caplog.text


def test_t5_without_prefix_warns(t5_checkpoint, data, tmp_path, caplog):
    with pytest.raises(ValueError, match="the tokenizer"):  # stops after the warning, before training
        main(translation_args(t5_checkpoint, tmp_path / "out", "--do_train", "--forced_bos_token", "<nope>",
                              data=data))  # fmt: skip
    assert "didn't provide a source prefix" in caplog.text


@pytest.mark.parametrize(
    "translation, lang",
    [({"en": "The cat sees the dog."}, "es"), ({"en": "The cat.", "es": "  "}, "es"), ({"es": "El gato."}, "en")],
)
def test_record_without_a_language(marian_checkpoint, tmp_path, translation, lang):
    """Named by file and line: line 2 is blank (`datasets` skips it), the bad record is on line 4."""
    lines = [json.dumps(row) for row in make_pairs(2, 5)]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join([lines[0], "", lines[1], json.dumps({"translation": translation})]) + "\n")
    with pytest.raises(ValueError, match=rf"without a '{lang}' text \(.*train.jsonl, line 4\)"):
        main(translation_args(marian_checkpoint, tmp_path / "out", "--do_train", data={"train": path}))


def test_empty_file(marian_checkpoint, data, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=r"validation file .*empty.jsonl is empty"):
        main(translation_args(marian_checkpoint, tmp_path / "out", "--do_train", "--do_eval",
                              data={**data, "validation": empty}))  # fmt: skip


def test_unknown_language_code(marian_checkpoint, data, tmp_path):
    argv = translation_args(marian_checkpoint, tmp_path / "out", "--do_train", data=data)
    argv[argv.index("--target_lang") + 1] = "fr"
    with pytest.raises(ValueError, match=r"no 'fr' texts: its languages are \['en', 'es'\]"):
        main(argv)


def test_missing_file_and_wrong_extension(marian_checkpoint, data, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl does not exist"):
        main(translation_args(marian_checkpoint, tmp_path / "out", "--do_train",
                              data={"train": tmp_path / "nowhere.jsonl"}))  # fmt: skip
    with pytest.raises(ValueError, match=r"--train_file .*train.csv should be a JSON-lines file"):
        main(
            translation_args(marian_checkpoint, tmp_path / "out", "--do_train", data={"train": tmp_path / "train.csv"})
        )
    with pytest.raises(ValueError, match="--do_eval needs a --validation_file"):
        main(translation_args(marian_checkpoint, tmp_path / "out", "--do_eval", data=data, validation=None))


def test_arguments_checks():
    with pytest.raises(ValueError, match="--source_lang and --target_lang"):
        DataTrainingArguments(train_file="a.jsonl")
    with pytest.raises(ValueError, match="must differ"):
        DataTrainingArguments(train_file="a.jsonl", source_lang="en", target_lang="en_XX")
    args = DataTrainingArguments(train_file="a.jsonl", source_lang="en_XX", target_lang="ro_RO", max_target_length=7)
    assert args.languages == ("en", "ro") and args.val_max_target_length == 7


def test_an_argument_file_gives_the_arguments_of_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = {
        "model_name_or_path": "m", "train_file": "t.jsonl", "source_lang": "en", "target_lang": "es",
        "output_dir": "o", "do_train": True, "predict_with_generate": True, "ea_alpha": 0.3, "num_beams": 2,
        "source_prefix": "translate English to Spanish: ",
    }  # fmt: skip
    (tmp_path / "args.json").write_text(json.dumps(values))
    argv = [arg for key, value in values.items() for arg in (f"--{key}", str(value))]
    model_args, data_args, training_args = parse_args([str(tmp_path / "args.json")])
    assert (model_args.ea_alpha, data_args.num_beams, training_args.predict_with_generate) == (0.3, 2, True)
    assert (model_args, data_args, training_args) == parse_args(argv)


def fake_wmt(rows: dict[str, list[dict]]) -> datasets.DatasetDict:
    """A Hub WMT pair as `datasets.load_dataset("wmt16", "ro-en")` gives it: a `Translation` feature."""
    features = datasets.Features({"translation": datasets.Translation(languages=["en", "es"])})
    return datasets.DatasetDict(
        {split: datasets.Dataset.from_list(split_rows, features=features) for split, split_rows in rows.items()}
    )


def test_hub_dataset(marian_checkpoint, tmp_path, monkeypatch):
    calls = []
    hub = fake_wmt({"train": make_pairs(16, 0), "validation": make_pairs(4, 1), "test": make_pairs(4, 2)})
    monkeypatch.setattr(run_translation.datasets, "load_dataset", lambda *args, **kwargs: calls.append(args) or hub)
    argv = translation_args(
        marian_checkpoint, tmp_path / "out", "--do_train", "--do_eval", "--predict_with_generate",
        "--dataset_name", "wmt16", "--dataset_config_name", "es-en", data={},
    )  # fmt: skip
    metrics = main(argv)
    assert calls == [("wmt16", "es-en")] and metrics["eval_samples"] == 4 and "eval_bleu" in metrics
    assert "wmt16" in (tmp_path / "out" / "README.md").read_text()


def test_hub_record_without_a_language_is_named_by_row(marian_checkpoint, tmp_path, monkeypatch):
    rows = make_pairs(4, 0)
    rows[2] = {"translation": {"en": "The cat.", "es": ""}}
    monkeypatch.setattr(run_translation.datasets, "load_dataset", lambda *args, **kwargs: fake_wmt({"train": rows}))
    monkeypatch.setattr(run_translation, "load_model", lambda *args, **kwargs: pytest.fail("loaded a model"))
    argv = translation_args(marian_checkpoint, tmp_path / "out", "--do_train", "--dataset_name", "wmt16", data={})
    with pytest.raises(ValueError, match=r"without a 'es' text \(wmt16 train, row 2\)"):
        main(argv)


def test_a_tokenizer_of_another_model_is_refused_before_training(t5_checkpoint, marian_checkpoint, data, tmp_path):
    argv = translation_args(marian_checkpoint, tmp_path / "out", "--do_train", "--tokenizer_name", str(t5_checkpoint),
                            data=data)  # fmt: skip
    fix = (
        r"Pass the model's own tokenizer with --tokenizer_name, or train one .* scripts/examples/train_tokenizers\.py"
    )
    with pytest.raises(ValueError, match=rf"tokenizer of .* has \d+ ids, the model .* \d+ embeddings\. {fix}"):
        main(argv)
    assert not (tmp_path / "out" / "config.json").exists()


def test_ea_switches_with_a_vanilla_model_are_refused(marian_checkpoint, data, tmp_path):
    argv = translation_args(marian_checkpoint, tmp_path / "out", "--do_train", "--model_type", "vanilla",
                            "--ea_alpha", "0.3", "--ea_beta", "0.5", data=data)  # fmt: skip
    with pytest.raises(ValueError, match=r"--ea_alpha, --ea_beta with --model_type vanilla: .* Drop them"):
        main(argv)


def test_the_folder_works_without_ea_hf_and_is_ready_for_the_hub(marian_checkpoint, data, tmp_path):
    output_dir = tmp_path / "out"
    argv = translation_args(marian_checkpoint, output_dir, "--do_train", "--do_eval", "--predict_with_generate",
                            "--card_dataset", "org/verses", data=data)  # fmt: skip
    main(argv)
    card = ModelCard.load(output_dir / "README.md").data
    assert card.pipeline_tag == "translation" and card.license == "apache-2.0" and len(card.widget) == 2
    push_to_hub.verify(output_dir, "org/ea-marian")  # runs the widget in an interpreter without ea_hf
