#!/usr/bin/env python
"""Train and evaluate time-series classifiers (or regressors) on a UEA/UCR archive dataset: EA-DC-Transformer, the
same model without EA, or the TST-style Transformer baseline, over several seeds.

    .venv/bin/python scripts/examples/run_uea.py --dataset_name JapaneseVowels --model_type ea_dc --seeds 0 1 2 3 4 \\
        --output_dir outputs/uea/JapaneseVowels/ea_dc

Protocol (the authors', TST's): a seeded, stratified validation split of TRAIN (never TEST); standardisation fitted
on the training part only; the checkpoint with the lowest validation loss is selected (`load_best_model_at_end`);
test accuracy is reported at that checkpoint; mean and standard deviation over the seeds. Each seed runs in
`output_dir/seed_N`, resumes from its last checkpoint, and is skipped once its `all_results.json` exists. Arguments
are `HfArgumentParser` dataclasses plus `TrainingArguments`, from the command line or one JSON or YAML file; the
authors' recipe (`RECIPE`) fills in the training arguments not given.

BasicMotions and JapaneseVowels come from the `.ts` files the `aeon` wheel bundles; any other archive dataset from
`--data_dir`, a folder of `<Name>_TRAIN.ts` / `<Name>_TEST.ts` files (or `<Name>/` subfolders). A dataset name the
folder lacks is refused before anything loads, naming the closest ones there; so are `--ea_alpha`/`--ea_beta` with
`--model_type dc` or `tst`.

A classifier's seed folder also holds the time-series pipeline's code (`ea_hf.save_time_series_pipeline`):
`pipeline("time-series-classification", model=folder, trust_remote_code=True)` works where ea_hf is not installed.
Its model card has what `scripts/release/push_to_hub.py` checks: the `pipeline_tag`, `--license` (apache-2.0), the
dataset, the accuracy in the model-index and, with `--hub_model_id`, widget examples: the first `--widget_examples`
TEST series as CSV files under `examples/`, with the outputs the trained model gives.
"""

import difflib
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from huggingface_hub import EvalResult, ModelCard
from transformers import HfArgumentParser, Trainer, TrainingArguments, pipeline, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ea_hf import EADCTransformerConfig, EADCTransformerForTimeSeriesClassification, save_time_series_pipeline
from ea_hf.modeling_ea_dc_transformer import EADCTransformerForTimeSeriesRegression
from ea_hf.modeling_tst import TSTConfig, TSTForTimeSeriesClassification, TSTForTimeSeriesRegression
from ea_hf.time_series import AEON_HINT, Standardizer, bundled_uea_dir, load_uea, pad_batch, train_validation_split


logger = logging.getLogger(__name__)

MODEL_TYPES = ("ea_dc", "dc", "tst")
EA_DEFAULTS = {"ea_alpha": 0.3, "ea_beta": 0.7}  # the authors'
RECIPE = {  # the authors' (RAdam -> AdamW without weight decay): the defaults of the training arguments
    "num_train_epochs": 400.0, "learning_rate": 1e-3, "per_device_train_batch_size": 64,
    "per_device_eval_batch_size": 256, "max_grad_norm": 4.0, "eval_strategy": "epoch", "save_strategy": "epoch",
    "save_total_limit": 1, "save_only_model": True, "load_best_model_at_end": True, "metric_for_best_model": "loss",
    "logging_strategy": "epoch", "report_to": "none", "dataloader_num_workers": 0,
}  # fmt: skip


@dataclass
class ModelArguments:
    model_type: str = field(
        default="ea_dc",
        metadata={"help": "ea_dc: EA-DC-Transformer; dc: the same without EA; tst: the TST-style Transformer"},
    )
    d_model: int = field(default=64, metadata={"help": "model width (the authors tried 64 and 128)"})
    ea_alpha: float | None = field(default=None, metadata={"help": "EA conv-branch weight (ea_dc only; default 0.3)"})
    ea_beta: float | None = field(default=None, metadata={"help": "EA previous-map weight (ea_dc only; default 0.7)"})
    dropout: float = field(default=0.1)


@dataclass
class DataArguments:
    dataset_name: str = field(default="BasicMotions", metadata={"help": "UEA/UCR archive name"})
    data_dir: str | None = field(default=None, metadata={"help": "folder of .ts files (default: aeon's bundled ones)"})
    validation_fraction: float = field(default=0.3, metadata={"help": "share of TRAIN held out for model selection"})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "one run per seed"})
    license: str = field(default="apache-2.0", metadata={"help": "the model card's license (a Hub license id)"})
    widget_examples: int = field(
        default=3, metadata={"help": "TEST series in the card's widget (needs --hub_model_id)"}
    )
    score_test: bool = field(
        default=True,
        metadata={
            "help": "score TEST after training; false for model-selection runs (validation only; TEST's series "
            "lengths are still read: they set the head's input size)"
        },
    )


class SeriesDataset(torch.utils.data.Dataset):
    """Standardised series as Trainer examples: {"past_values": [T_i, C] float (NaN kept), "labels": ...}."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return {"past_values": self.dataset.series[index], "labels": self.dataset.labels[index]}


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Pads a batch: past_values [B, T, C] (missing values and padding 0), attention_mask [B, T], labels [B]."""
    values, attention_mask = pad_batch([example["past_values"] for example in examples])
    labels = torch.as_tensor(np.stack([example["labels"] for example in examples]))
    return {"past_values": values, "attention_mask": attention_mask, "labels": labels}


def build_model(model_args: ModelArguments, num_channels: int, context_length: int, train, class_names):
    classification = train.is_classification
    num_labels = len(class_names) if classification else int(np.prod(train.labels.shape[1:]) or 1)
    common = dict(
        num_channels=num_channels,
        context_length=context_length,
        d_model=model_args.d_model,
        dropout=model_args.dropout,
        num_labels=num_labels,
    )
    if classification:
        common["id2label"] = dict(enumerate(class_names))
        common["label2id"] = {name: i for i, name in enumerate(class_names)}
    if model_args.model_type == "tst":
        model_class = TSTForTimeSeriesClassification if classification else TSTForTimeSeriesRegression
        return model_class(TSTConfig(**common))
    model_class = (
        EADCTransformerForTimeSeriesClassification if classification else EADCTransformerForTimeSeriesRegression
    )
    ea = dict(
        ea_alpha=EA_DEFAULTS["ea_alpha"] if model_args.ea_alpha is None else model_args.ea_alpha,
        ea_beta=EA_DEFAULTS["ea_beta"] if model_args.ea_beta is None else model_args.ea_beta,
        ea_encoder=model_args.model_type == "ea_dc",
    )
    return model_class(EADCTransformerConfig(**common, **ea))


def compute_metrics(prediction) -> dict[str, float]:
    logits, labels = prediction.predictions, prediction.label_ids
    if logits.shape[-1] > 1 and labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer):
        return {"accuracy": float((logits.argmax(-1) == labels).mean())}
    return {"rmse": float(np.sqrt(((logits.reshape(labels.shape) - labels) ** 2).mean()))}


def run_seed(seed, model_args, data_args, training_args, full_train, test) -> dict:
    """One seed: split, standardise, train with selection on validation loss, evaluate on validation and test."""
    output_dir = os.path.join(training_args.output_dir, f"seed_{seed}")
    results_file = os.path.join(output_dir, "all_results.json")
    if os.path.exists(results_file):
        logger.info(f"seed {seed}: {results_file} exists, skipped")
        return json.load(open(results_file))
    args = training_args.to_dict()
    args.update(output_dir=output_dir, seed=seed, data_seed=seed, run_name=f"seed_{seed}")
    args = TrainingArguments(**{k: v for k, v in args.items() if k in TrainingArguments.__dataclass_fields__})
    set_seed(seed)
    train, validation = train_validation_split(full_train, data_args.validation_fraction, seed)
    standardizer = Standardizer().fit(train)
    raw_test = test
    train, validation, test = (standardizer.transform(d) for d in (train, validation, test))
    context_length = max(full_train.max_length, test.max_length)  # lengths only: the head's input size
    model = build_model(model_args, full_train.num_channels, context_length, full_train, full_train.class_names)
    model.config.standardizer = standardizer.to_dict()  # saved with every checkpoint: how inputs were scaled
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=SeriesDataset(train),
        eval_dataset=SeriesDataset(validation),
        data_collator=collate,
        compute_metrics=compute_metrics,
    )
    last_checkpoint = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    start = time.perf_counter()
    train_result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint or last_checkpoint)
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    metrics = {"train_seconds": time.perf_counter() - start, "best_checkpoint": trainer.state.best_model_checkpoint}
    metrics.update(trainer.evaluate(SeriesDataset(validation), metric_key_prefix="eval"))
    trainer.save_metrics("eval", {k: v for k, v in metrics.items() if k.startswith("eval_")})
    if data_args.score_test:
        metrics.update(trainer.evaluate(SeriesDataset(test), metric_key_prefix="test"))
        trainer.save_metrics("test", {k: v for k, v in metrics.items() if k.startswith("test_")})
    if full_train.is_classification and trainer.is_world_process_zero():
        save_time_series_pipeline(trainer.model, output_dir)  # its pipeline then loads without ea_hf
        write_card(trainer, data_args, raw_test, metrics)
    with open(results_file, "w") as file:
        json.dump(metrics, file, indent=2)
    return metrics


def write_card(trainer: Trainer, data_args: DataArguments, test, metrics: dict) -> None:
    """The model card of a seed's folder: Trainer's, plus the pipeline tag, the accuracy in the model-index and,
    with `--hub_model_id`, widget examples (TEST series as CSV files in `examples/`, with the model's outputs)."""
    folder, repo = trainer.args.output_dir, trainer.args.hub_model_id
    dataset = f"uea-{data_args.dataset_name.lower()}"
    tags = ["time-series-classification", "custom_code"]
    if trainer.model.config.model_type == "ea_dc_transformer" and trainer.model.config.ea_encoder:
        tags.insert(0, "evolving-attention")
    trainer.create_model_card(license=data_args.license, tags=tags, dataset_tags=dataset, dataset=dataset)
    card = ModelCard.load(os.path.join(folder, "README.md"))
    card.data.pipeline_tag = "time-series-classification"
    split = "test" if "test_accuracy" in metrics else "eval"
    card.data.model_name = card.data.model_name or os.path.basename(os.path.abspath(folder))
    card.data.eval_results = [
        EvalResult(
            "time-series-classification", dataset, data_args.dataset_name, "accuracy", metrics[f"{split}_accuracy"]
        )
    ]
    if repo is not None:
        classifier = pipeline("time-series-classification", model=folder, trust_remote_code=True, device="cpu")
        os.makedirs(os.path.join(folder, "examples"), exist_ok=True)
        widget = []
        for index in range(min(data_args.widget_examples, len(test))):
            name = f"examples/test_{index}_{test.class_names[test.labels[index]]}.csv"
            np.savetxt(os.path.join(folder, name), test.series[index], delimiter=",", fmt="%.6g")
            outputs = classifier(os.path.join(folder, name), top_k=3)
            widget.append(
                {
                    "src": f"https://huggingface.co/{repo}/resolve/main/{name}",
                    "output": [{"label": o["label"], "score": round(o["score"], 4)} for o in outputs],
                }
            )
        card.data.widget = widget
    card.save(os.path.join(folder, "README.md"))


def check_dataset(name: str, data_dir: str | None) -> None:
    """Refuse a `--data_dir` that is no folder, and a dataset name the folder lacks (naming the closest ones there),
    before anything loads; aeon's own hint when its files are missing."""
    if data_dir is not None and not os.path.isdir(data_dir):
        raise FileNotFoundError(f"--data_dir {data_dir}: no such folder.")
    folder = bundled_uea_dir() if data_dir is None else Path(data_dir)  # FileNotFoundError: aeon is not installed
    if not folder.is_dir():
        raise FileNotFoundError(f"aeon's bundled UEA files are missing: no folder {folder}. {AEON_HINT}")
    names = {path.name.removesuffix("_TRAIN.ts") for path in folder.glob("*_TRAIN.ts")}
    names |= {path.parent.name for path in folder.glob("*/*_TRAIN.ts") if path.name == f"{path.parent.name}_TRAIN.ts"}
    if name not in names:
        close = difflib.get_close_matches(name, sorted(names), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ValueError(
            f"--dataset_name {name}: unknown dataset{hint}. {folder} has {', '.join(sorted(names)) or 'none'}; "
            "pass --data_dir, a folder of <Name>_TRAIN.ts / <Name>_TEST.ts files, for another one."
        )


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """The arguments from the command line (`argv`, default `sys.argv[1:]`), or from one `.json`/`.yaml` file; the
    authors' recipe (`RECIPE`) fills in the training arguments not given."""
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        text = Path(argv[0]).read_text()
        given = json.loads(text) if argv[0].endswith(".json") else yaml.safe_load(text)
        return parser.parse_dict({**RECIPE, **given})
    parser.set_defaults(**RECIPE)
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_args(argv)
    if model_args.model_type not in MODEL_TYPES:
        raise ValueError(f"--model_type must be one of {MODEL_TYPES}, got {model_args.model_type!r}.")
    given = [f"--{name}" for name in EA_DEFAULTS if getattr(model_args, name) is not None]
    if model_args.model_type != "ea_dc" and given:
        raise ValueError(
            f"{', '.join(given)} with --model_type {model_args.model_type}: only ea_dc has evolving attention. Drop "
            f"{'it' if len(given) == 1 else 'them'}, or use --model_type ea_dc."
        )
    check_dataset(data_args.dataset_name, data_args.data_dir)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)

    full_train = load_uea(data_args.dataset_name, data_args.data_dir, "TRAIN")
    test = load_uea(data_args.dataset_name, data_args.data_dir, "TEST", class_names=full_train.class_names)
    logger.info(
        f"{data_args.dataset_name}: {len(full_train)} train / {len(test)} test series, {full_train.num_channels} "
        f"channels, lengths up to {max(full_train.max_length, test.max_length)}"
    )
    runs = {seed: run_seed(seed, model_args, data_args, training_args, full_train, test) for seed in data_args.seeds}
    split = "test" if data_args.score_test else "eval"
    key = f"{split}_accuracy" if full_train.is_classification else f"{split}_rmse"
    scores = [run[key] for run in runs.values()]
    summary = {
        "dataset": data_args.dataset_name,
        "model_type": model_args.model_type,
        "seeds": data_args.seeds,
        f"{key}_mean": statistics.mean(scores),
        f"{key}_std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
        "train_seconds_mean": statistics.mean(run["train_seconds"] for run in runs.values()),
        "runs": runs,
    }
    os.makedirs(training_args.output_dir, exist_ok=True)
    with open(os.path.join(training_args.output_dir, "all_results.json"), "w") as file:
        json.dump(summary, file, indent=2)
    print(
        f"{data_args.dataset_name} {model_args.model_type}: {key} {summary[f'{key}_mean']:.4f} +- "
        f"{summary[f'{key}_std']:.4f} over seeds {data_args.seeds}"
    )
    return summary


if __name__ == "__main__":
    main()
