#!/usr/bin/env python
"""Train (from scratch) or fine-tune a causal language model with evolving attention: transformers'
`examples/pytorch/language-modeling/run_clm.py`, same arguments and outputs, plus `--model_type` and the EA switches
(`--ea_alpha`, `--ea_beta`, `--ea_kernel_size`, `--ea_activation`).

    python scripts/examples/run_clm.py --model_name_or_path Qwen/Qwen2.5-0.5B \\
        --dataset_name wikitext --dataset_config_name wikitext-2-raw-v1 --block_size 512 \\
        --do_train --do_eval --per_device_train_batch_size 4 --output_dir /tmp/ea-qwen2-wikitext

fine-tunes EA-Qwen2, converted on the fly from the vanilla checkpoint (`--model_type vanilla`: transformers' Qwen2, for
comparisons); Llama checkpoints give EA-Llama, and an EA checkpoint loads as it is. From scratch, name a vanilla Llama
or Qwen2 config and a tokenizer instead of `--model_name_or_path`:

    python scripts/examples/run_clm.py --config_name llama-config/ --tokenizer_name tok-clm-en \\
        --train_file data/verses/train.jsonl --validation_file data/verses/validation.jsonl \\
        --text_column translation.en --block_size 128 --do_train --do_eval --output_dir /tmp/ea-llama-verses

The model then starts from a random vanilla model drawn with `--seed` (its vocabulary and special ids set from the
tokenizer, `--config_overrides "hidden_size=256,num_hidden_layers=6"` applied), converted to EA with identity convs:
an EA run and a `--model_type vanilla` run with the same seed start from the same weights.

Data: `--dataset_name` (and `--dataset_config_name`) loads a Hub dataset; or `--train_file`, `--validation_file`,
`--test_file`: plain text (`.txt`, one text a line), CSV or JSON lines. `--text_column` names the text (default
`text`, else the only column; a dotted name reaches into JSON records, e.g. `translation.en` in the verse files that
`python -m scripts.data.prepare_data verses` writes). Texts are tokenized, concatenated and cut into `--block_size`
blocks, as transformers' script does. Without a validation split, `--validation_split_percentage` of the training
data is held out. A missing file, a column the data lacks, and a tokenizer that does not match the model are refused
before anything is trained.

Outputs in `--output_dir`: the model (an EA model with its code and `auto_map`), tokenizer, `train_results.json`,
`eval_results.json` (with `perplexity`), `predict_results.json` (test loss and perplexity, with `--do_predict` and a
`--test_file`), `all_results.json`, `trainer_state.json` (with `--eval_strategy steps`, the validation loss along
training) and a model card. A run resumes from the last complete checkpoint in `--output_dir`.
`pipeline("text-generation", model=output_dir, trust_remote_code=True)` generates from it where ea_hf is not
installed.
"""

import logging
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from itertools import chain

import datasets
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

from ea_hf import ea_model_classes
from ea_hf.finetuning import (
    ModelArguments,
    check_launch,
    check_tokenizer,
    detect_last_checkpoint,
    ea_overrides,
    is_ea_config,
    load_model,
    setup_logging,
    update_model_card,
)


logger = logging.getLogger(__name__)

FILE_KINDS = {"txt": "text", "csv": "csv", "json": "json", "jsonl": "json"}


@dataclass
class ClmModelArguments(ModelArguments):
    """`ModelArguments`, where `--model_name_or_path` may be left out to train from scratch from `--config_name`."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Checkpoint to start from (EA or vanilla Llama/Qwen2); leave out to train from scratch."},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": 'From scratch: config fields to change, e.g. "hidden_size=256,num_hidden_layers=6".'},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.model_name_or_path is None and (self.config_name is None or self.tokenizer_name is None):
            raise ValueError("Training from scratch needs --config_name and --tokenizer_name.")
        if self.config_overrides is not None and self.model_name_or_path is not None:
            raise ValueError("--config_overrides applies to training from scratch (without --model_name_or_path).")


@dataclass
class DataTrainingArguments:
    """What data to train and evaluate on (transformers' run_clm.py arguments, plus `--test_file` and
    `--text_column`)."""

    dataset_name: str | None = field(
        default=None, metadata={"help": "The name of a Hub dataset to use (via the datasets library)."}
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The configuration name of the Hub dataset (e.g. wikitext-2-raw-v1)."}
    )
    train_file: str | None = field(default=None, metadata={"help": "Training text (.txt, .csv, .json or .jsonl)."})
    validation_file: str | None = field(
        default=None, metadata={"help": "Validation text for the perplexity of --do_eval (same kinds)."}
    )
    test_file: str | None = field(
        default=None, metadata={"help": "Test text for the perplexity of --do_predict (same kinds)."}
    )
    text_column: str | None = field(
        default=None,
        metadata={"help": "The column of texts (default: `text`, else the only one); dotted for JSON records."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training blocks (debugging, quicker training)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N validation blocks (debugging, quicker training)."}
    )
    max_predict_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N test blocks (debugging, quicker training)."}
    )
    block_size: int | None = field(
        default=None,
        metadata={"help": "Length of the training blocks in tokens (default: the model's maximum, at most 1024)."},
    )
    validation_split_percentage: int = field(
        default=5, metadata={"help": "Percent of the training data held out when there is no validation split."}
    )
    keep_linebreaks: bool = field(default=True, metadata={"help": "Keep line breaks in .txt files."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Tokenize again instead of using the cache."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "The number of processes to use for the preprocessing."}
    )
    license: str = field(default="apache-2.0", metadata={"help": "The model card's license (a Hub license id)."})
    card_dataset: str | None = field(
        default=None,
        metadata={"help": "The Hub dataset id the model card names for --train_file data (--dataset_name: that one)."},
    )

    def __post_init__(self):
        files = (self.train_file, self.validation_file, self.test_file)
        if self.dataset_name is None and all(path is None for path in files):
            raise ValueError("Need either a dataset name or a training, validation or test file.")
        for flag in ("train_file", "validation_file", "test_file"):
            path = getattr(self, flag)
            if path is not None and self.file_kind(path) is None:
                raise ValueError(f"--{flag} {path} should be a .txt, .csv, .json or .jsonl file.")
        if self.block_size is not None and self.block_size < 2:
            raise ValueError(f"--block_size must be at least 2, got {self.block_size}.")

    @staticmethod
    def file_kind(path: str) -> str | None:
        return FILE_KINDS.get(path.rsplit(".", 1)[-1].lower()) if "." in os.path.basename(path) else None

    @property
    def uses_files(self) -> bool:
        return any(path is not None for path in (self.train_file, self.validation_file, self.test_file))


def load_raw_datasets(data_args, model_args) -> datasets.DatasetDict:
    """The local files if any are given, else `--dataset_name` from the Hub; a held-out validation split from the
    training data when there is none."""
    if data_args.uses_files:
        files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
        raw = datasets.DatasetDict()
        for split, path in ((split, path) for split, path in files.items() if path is not None):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"The {split} file {path} does not exist.")
            kind = data_args.file_kind(path)
            options = {"keep_linebreaks": data_args.keep_linebreaks} if kind == "text" else {}
            logger.info(f"Loading a local file for {split}: {path}")
            raw[split] = datasets.load_dataset(
                kind, data_files={split: path}, split=split, cache_dir=model_args.cache_dir, **options
            )
    else:
        try:
            raw = datasets.load_dataset(
                data_args.dataset_name,
                data_args.dataset_config_name,
                cache_dir=model_args.cache_dir,
                token=model_args.token,
            )
        except ConnectionError as error:
            raise ConnectionError(
                f"Could not load {data_args.dataset_name} from the Hub: {error}. Offline, give the data as local "
                "files with --train_file/--validation_file/--test_file."
            ) from error
    if "validation" not in raw and "train" in raw and data_args.validation_split_percentage > 0:
        held_out = raw["train"].train_test_split(test_size=data_args.validation_split_percentage / 100, seed=0)
        raw["train"], raw["validation"] = held_out["train"], held_out["test"]
    return raw


def text_column(raw: datasets.DatasetDict, name: str | None) -> str:
    """The column of texts in every split: `name` (flattened: `translation.en`), else `text`, else the only one."""
    for split, dataset in raw.items():
        columns = dataset.column_names
        chosen = name or ("text" if "text" in columns or len(columns) != 1 else columns[0])
        if chosen not in columns:
            raise ValueError(
                f"The {split} data has no {chosen!r} column (columns: {columns}): name the texts with --text_column."
            )
        feature = dataset.features[chosen]
        if getattr(feature, "dtype", None) not in ("string", "large_string"):
            raise ValueError(f"The {split} data's {chosen!r} column holds {feature}, not texts.")
    return chosen


def build_from_scratch(model_args, tokenizer, seed: int):
    """A random vanilla model of `--config_name` (with `--config_overrides`, the tokenizer's vocabulary size and
    special ids) drawn with `seed`; for `--model_type ea` converted to its EA twin, as a vanilla checkpoint is."""
    hub = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision, "token": model_args.token}
    config = AutoConfig.from_pretrained(model_args.config_name, **hub)
    if is_ea_config(config):
        raise ValueError(
            f"--config_name {model_args.config_name} is an EA config; from scratch, name the vanilla config (Llama or "
            "Qwen2) and choose EA with --model_type ea and the EA switches."
        )
    if model_args.config_overrides:
        config.update_from_string(model_args.config_overrides)
    special = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id") for name in ("pad", "bos", "eos")}
    config.update({"vocab_size": len(tokenizer), **{k: v for k, v in special.items() if v is not None}})
    set_seed(seed)
    vanilla = AutoModelForCausalLM.from_config(config, trust_remote_code=model_args.trust_remote_code)
    logger.info(f"Drew a random {type(vanilla).__name__} ({vanilla.num_parameters():,} parameters) with seed {seed}")
    if model_args.model_type == "vanilla":
        return vanilla
    ea_model_classes(config, AutoModelForCausalLM)  # a clear error for a model type with no EA twin
    with tempfile.TemporaryDirectory() as folder:
        vanilla.save_pretrained(folder)
        return load_model(
            ClmModelArguments(model_name_or_path=folder, **ea_overrides(model_args)), AutoModelForCausalLM
        )


class CardTrainer(Trainer):
    """A Trainer whose model card (also the one `push_to_hub` writes) has `card_metadata` too."""

    card_metadata: dict = {}

    def create_model_card(self, **kwargs):
        super().create_model_card(**kwargs)
        if self.is_world_process_zero():
            update_model_card(self.args.output_dir, self.card_metadata, default_model_name=True)


def parse_args(argv: list[str] | None = None) -> tuple[ClmModelArguments, DataTrainingArguments, TrainingArguments]:
    """The arguments from the command line (`argv`, default `sys.argv[1:]`), or from one `.json`/`.yaml` file."""
    parser = HfArgumentParser((ClmModelArguments, DataTrainingArguments, TrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(yaml_file=os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)


def perplexity(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args = parse_args(argv)

    setup_logging(training_args, logger)
    check_launch(training_args)  # several processes launched must form one group

    last_checkpoint = detect_last_checkpoint(training_args)
    needed = {"train": training_args.do_train, "validation": training_args.do_eval, "test": training_args.do_predict}
    if not any(needed.values()):
        logger.warning("Nothing to do: pass --do_train, --do_eval and/or --do_predict.")
    raw = load_raw_datasets(data_args, model_args)
    for split, wanted in needed.items():
        if wanted and split not in raw:
            action = {"train": "--do_train", "validation": "--do_eval", "test": "--do_predict"}[split]
            raise ValueError(f"{action} requires a {split} dataset (splits: {list(raw)}).")
    raw = datasets.DatasetDict({split: dataset.flatten() for split, dataset in raw.items() if needed.get(split)})
    column = text_column(raw, data_args.text_column)

    tokenizer = AutoTokenizer.from_pretrained(
        model_args.tokenizer_name or model_args.model_name_or_path,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
    )
    if model_args.model_name_or_path is None:
        model = build_from_scratch(model_args, tokenizer, training_args.seed)
    else:
        model = load_model(model_args, AutoModelForCausalLM)
    check_tokenizer(tokenizer, model, model_args)
    set_seed(training_args.seed)

    max_length = min(getattr(model.config, "max_position_embeddings", 1024), 1024)
    block_size = data_args.block_size or max_length
    if block_size > getattr(model.config, "max_position_embeddings", block_size):
        raise ValueError(
            f"--block_size {block_size} is longer than the model's {model.config.max_position_embeddings} positions."
        )

    def tokenize(examples):
        return tokenizer(examples[column])

    def group_texts(examples):
        """Concatenate the tokenized texts and cut them into blocks of `block_size` (the remainder is dropped)."""
        concatenated = {key: list(chain(*examples[key])) for key in examples}
        total = (len(concatenated["input_ids"]) // block_size) * block_size
        blocks = {k: [t[i : i + block_size] for i in range(0, total, block_size)] for k, t in concatenated.items()}
        blocks["labels"] = [block.copy() for block in blocks["input_ids"]]
        return blocks

    with training_args.main_process_first(desc="dataset map pre-processing"):
        tokenized = datasets.DatasetDict(
            {
                split: dataset.map(
                    tokenize,
                    batched=True,
                    num_proc=data_args.preprocessing_num_workers,
                    remove_columns=dataset.column_names,
                    load_from_cache_file=not data_args.overwrite_cache,
                    desc=f"Running tokenizer on the {split} data",
                )
                for split, dataset in raw.items()
            }
        )
        blocks = tokenized.map(
            group_texts,
            batched=True,
            num_proc=data_args.preprocessing_num_workers,
            load_from_cache_file=not data_args.overwrite_cache,
            desc=f"Grouping texts in blocks of {block_size}",
        )
    limits = {
        "train": data_args.max_train_samples,
        "validation": data_args.max_eval_samples,
        "test": data_args.max_predict_samples,
    }
    for split in blocks:
        if limits[split] is not None:
            blocks[split] = blocks[split].select(range(min(limits[split], len(blocks[split]))))
        if len(blocks[split]) == 0:
            raise ValueError(f"The {split} data holds fewer than --block_size {block_size} tokens: no block to use.")

    trainer = CardTrainer(
        model=model,
        args=training_args,
        train_dataset=blocks.get("train"),
        eval_dataset=blocks.get("validation"),
        processing_class=tokenizer,
        data_collator=default_data_collator,
    )

    results = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or last_checkpoint)
        metrics = {**train_result.metrics, "train_samples": len(blocks["train"])}
        trainer.save_model()  # an EA model with its code files and auto_map: it loads with trust_remote_code=True
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)

    for split, prefix in (("validation", "eval"), ("test", "predict")):
        if split not in blocks:
            continue
        logger.info(f"*** Perplexity on the {split} data ***")
        metrics = trainer.evaluate(eval_dataset=blocks[split], metric_key_prefix=prefix)
        metrics[f"{prefix}_samples"] = len(blocks[split])
        metrics["perplexity" if prefix == "eval" else f"{prefix}_perplexity"] = perplexity(metrics[f"{prefix}_loss"])
        trainer.log_metrics(prefix, metrics)
        trainer.save_metrics(prefix, metrics)
        results.update(metrics)

    kwargs = {
        "finetuned_from": model_args.model_name_or_path,
        "tasks": "text-generation",
        "license": data_args.license,
    }
    dataset = data_args.dataset_name or data_args.card_dataset
    if dataset is not None:
        kwargs["dataset_tags"] = kwargs["dataset"] = dataset
        if data_args.dataset_config_name is not None:
            kwargs["dataset_args"] = data_args.dataset_config_name
    if model_args.model_type == "ea":
        kwargs["tags"] = ["evolving-attention", "custom_code"]
    trainer.card_metadata = {"pipeline_tag": "text-generation"}
    if training_args.push_to_hub:
        trainer.push_to_hub(**kwargs)
    else:
        trainer.create_model_card(**kwargs)
    return results


if __name__ == "__main__":
    main()
