#!/usr/bin/env python
"""Fine-tune (or train from scratch) a Marian or T5 translation model on a WMT pair or on your own JSON-lines files,
with evolving attention: transformers' `examples/pytorch/translation/run_translation.py`, same arguments and outputs,
plus `--model_type` and the EA switches (`--ea_alpha`, `--ea_beta`, `--ea_kernel_size`, `--ea_activation`).

    python scripts/examples/run_translation.py --model_name_or_path Helsinki-NLP/opus-mt-en-ro \\
        --dataset_name wmt16 --dataset_config_name ro-en --source_lang en --target_lang ro \\
        --do_train --do_eval --predict_with_generate --per_device_train_batch_size 16 --num_train_epochs 3 \\
        --output_dir /tmp/en-ro

fine-tunes EA-Marian, converted on the fly from the vanilla checkpoint (`--model_type vanilla`: transformers' Marian,
for comparisons); an EA checkpoint loads as it is. T5 works the same way (EA-T5) and wants a task prefix, e.g.
`--source_prefix "translate English to Romanian: "`. Arguments come from the command line or one `.json`/`.yaml`
file; `accelerate launch scripts/examples/run_translation.py ...` trains on several processes.

Data: `--dataset_name` (and `--dataset_config_name`) loads a Hub dataset with a `translation` column (e.g. `wmt16`
`ro-en`); or `--train_file`, `--validation_file`, `--test_file`: JSON lines (`.json` or `.jsonl`), one
`{"translation": {"en": "...", "es": "..."}}` record a line, as `python -m scripts.data.prepare_data verses` writes
them. `--source_lang`/`--target_lang` name the keys (for a code such as `en_XX`, the part before `_`). A missing or
empty file, another file kind, a language code the data lacks, and a record whose source or target text is missing or
empty (named by file and line) are refused before anything is trained.

Metrics (with `--predict_with_generate`, computed offline with `sacrebleu`, as `evaluate`'s sacrebleu metric does):
corpus BLEU (`bleu`), chrF (`chrf`) and the mean generated length in tokens (`gen_len`). Outputs in `--output_dir`:
the model (an EA model with its code and `auto_map`), tokenizer, `train_results.json`, `eval_results.json`,
`predict_results.json`, `all_results.json`, `trainer_state.json`, a model card, and with `--do_predict
--predict_with_generate` `generated_predictions.txt` (one translation a line). A run resumes from the last complete
checkpoint in `--output_dir`.

After training, the folder also holds the translation pipeline's code (`ea_hf.save_translation_pipeline`):
`pipeline("translation", model=output_dir, trust_remote_code=True)` works where ea_hf is not installed. The model
card (also the one `--push_to_hub` uploads) has what `scripts/release/push_to_hub.py` checks: the `pipeline_tag`,
`--license` (apache-2.0), the dataset (`--dataset_name`, or `--card_dataset` for local files), BLEU and chrF in the
model-index (with `--do_eval --predict_with_generate`), and widget examples: the first `--widget_examples` validation
sources with the translations the trained model gives. A tokenizer with more ids than the model has embeddings
(another model's), and EA switches with `--model_type vanilla`, are refused before anything is trained.
"""

import logging
import os
import random
import sys
from dataclasses import dataclass, field

import datasets
import numpy as np
import pyarrow.compute as pc
import sacrebleu
import transformers
from huggingface_hub import EvalResult
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    EvalPrediction,
    HfArgumentParser,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    default_data_collator,
    set_seed,
)

from ea_hf import TranslationPipeline, save_translation_pipeline
from ea_hf.custom_pipelines import custom_pipelines_entry
from ea_hf.finetuning import (
    ModelArguments,
    check_launch,
    check_tokenizer,
    detect_last_checkpoint,
    load_model,
    setup_logging,
    update_model_card,
)


logger = logging.getLogger(__name__)


TRANSLATION_FILE_EXTENSIONS = ("json", "jsonl")
T5_MODEL_TYPES = ("t5", "ea_t5")


@dataclass
class DataTrainingArguments:
    """What data to train and evaluate on (transformers' run_translation.py arguments)."""

    source_lang: str = field(default=None, metadata={"help": "Source language id for translation."})
    target_lang: str = field(default=None, metadata={"help": "Target language id for translation."})
    dataset_name: str | None = field(
        default=None, metadata={"help": "The name of a Hub dataset to use (via the datasets library)."}
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The configuration name of the Hub dataset (e.g. ro-en)."}
    )
    train_file: str | None = field(default=None, metadata={"help": "A JSON-lines file of training data."})
    validation_file: str | None = field(
        default=None, metadata={"help": "A JSON-lines file of validation data (BLEU and chrF with --do_eval)."}
    )
    test_file: str | None = field(
        default=None, metadata={"help": "A JSON-lines file of test data (translated with --do_predict)."}
    )
    overwrite_cache: bool = field(default=False, metadata={"help": "Tokenize again instead of using the cache."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "The number of processes to use for the preprocessing."}
    )
    max_source_length: int | None = field(
        default=1024,
        metadata={"help": "Maximum input length in tokens after tokenization: longer inputs are truncated."},
    )
    max_target_length: int | None = field(
        default=128,
        metadata={"help": "Maximum target length in tokens after tokenization: longer targets are truncated."},
    )
    val_max_target_length: int | None = field(
        default=None,
        metadata={
            "help": "Maximum target length for validation and test, and the default `max_length` of generation "
            "in evaluate and predict (default: --max_target_length)."
        },
    )
    pad_to_max_length: bool = field(
        default=False,
        metadata={"help": "Pad every input to the maximum length; if False, pad each batch to its longest input."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training examples (debugging, quicker training)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N evaluation examples (debugging, quicker training)."}
    )
    max_predict_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N prediction examples (debugging, quicker training)."}
    )
    num_beams: int | None = field(
        default=1,
        metadata={"help": "Number of beams in evaluate and predict (default 1: greedy); passed to generate."},
    )
    ignore_pad_token_for_loss: bool = field(
        default=True, metadata={"help": "Leave padded label tokens out of the loss."}
    )
    source_prefix: str | None = field(
        default=None, metadata={"help": 'A prefix before every source text (T5: "translate English to German: ").'}
    )
    forced_bos_token: str | None = field(
        default=None,
        metadata={"help": "A token that generation forces as the first generated token (e.g. a language token)."},
    )
    license: str = field(default="apache-2.0", metadata={"help": "The model card's license (a Hub license id)."})
    card_dataset: str | None = field(
        default=None,
        metadata={"help": "The Hub dataset id the model card names for --train_file data (--dataset_name: that one)."},
    )
    widget_examples: int = field(
        default=2, metadata={"help": "Source texts of the card's widget (the first validation ones, else training)."}
    )

    def __post_init__(self):
        if self.dataset_name is None and self.train_file is None and self.validation_file is None:
            if self.test_file is None:
                raise ValueError("Need either a dataset name or a training, validation or test file.")
        for flag in ("train_file", "validation_file", "test_file"):
            path = getattr(self, flag)
            extension = path.rsplit(".", 1)[-1].lower() if path and "." in os.path.basename(path) else ""
            if path is not None and extension not in TRANSLATION_FILE_EXTENSIONS:
                raise ValueError(f"--{flag} {path} should be a JSON-lines file (.json or .jsonl).")
        if self.source_lang is None or self.target_lang is None:
            raise ValueError("Need --source_lang and --target_lang.")
        if self.source_lang.split("_")[0] == self.target_lang.split("_")[0]:
            raise ValueError(f"--source_lang and --target_lang must differ, both are {self.source_lang!r}.")
        if self.val_max_target_length is None:
            self.val_max_target_length = self.max_target_length

    @property
    def uses_files(self) -> bool:
        return any(path is not None for path in (self.train_file, self.validation_file, self.test_file))

    @property
    def languages(self) -> tuple[str, str]:
        """The keys of the source and target texts (`en_XX` -> `en`, as transformers' script does)."""
        return self.source_lang.split("_")[0], self.target_lang.split("_")[0]


def load_raw_datasets(data_args, model_args, training_args) -> tuple[datasets.DatasetDict, dict[str, str]]:
    """The local files if any are given, else `--dataset_name` from the Hub; and where each split comes from (for
    error messages)."""
    if data_args.uses_files:
        files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
        files = {split: path for split, path in files.items() if path is not None}
        for split, path in files.items():
            if not os.path.isfile(path):
                raise FileNotFoundError(f"The {split} file {path} does not exist.")
            if _is_blank(path):
                raise ValueError(f"The {split} file {path} is empty: it needs one translation record a line.")
        raw = datasets.DatasetDict()
        for split, path in files.items():  # one at a time: a bad file is named by its own error
            logger.info(f"Loading a local file for {split}: {path}")
            raw[split] = datasets.load_dataset(
                "json", data_files={split: path}, split=split, cache_dir=model_args.cache_dir
            )
        return raw, files
    if data_args.dataset_name is None:
        raise ValueError("Need either a dataset name or a training, validation or test file.")
    try:
        raw = datasets.load_dataset(
            data_args.dataset_name,
            data_args.dataset_config_name,
            cache_dir=model_args.cache_dir,
            token=model_args.token,
        )
    except ConnectionError as error:
        raise ConnectionError(
            f"Could not load {data_args.dataset_name} ({data_args.dataset_config_name}) from the Hub: {error}. "
            "Offline, give the data as local JSON-lines files with --train_file/--validation_file/--test_file."
        ) from error
    name = data_args.dataset_name + (f" ({data_args.dataset_config_name})" if data_args.dataset_config_name else "")
    return raw, {split: f"{name} {split}" for split in raw}


def _is_blank(path: str) -> bool:
    with open(path, encoding="utf-8") as file:
        return all(not line.strip() for line in file)


def _line_number(path: str, index: int, num_rows: int) -> str:
    """Where row `index` of a local JSON-lines file is: `line N` (blank lines, which `datasets` skips, counted), or
    `record N` when the file is not one record a line."""
    with open(path, encoding="utf-8") as file:
        lines = [number for number, line in enumerate(file, start=1) if line.strip()]
    return f"line {lines[index]}" if len(lines) == num_rows else f"record {index + 1}"


def translation_languages(feature) -> list[str] | None:
    """The language keys of a `translation` feature (a Hub `Translation` or a JSON struct), or None if it is not
    one."""
    if isinstance(feature, datasets.Translation):
        return list(feature.languages)
    if isinstance(feature, dict):
        return list(feature)
    return None


def check_translations(raw: datasets.DatasetDict, sources: dict[str, str], languages: tuple[str, str]) -> None:
    """Clear errors, before anything is trained, for a split without a `translation` column or rows, a language code
    the data lacks, texts that are not strings, and a record whose source or target text is missing or empty (named
    by file and line)."""
    for split, dataset in raw.items():
        where = sources.get(split, f"{split} data")
        if "translation" not in dataset.column_names:
            raise ValueError(
                f"The {split} data ({where}) has no `translation` column (columns: {dataset.column_names}): "
                'each record should be {"translation": {"<source_lang>": "...", "<target_lang>": "..."}}.'
            )
        if len(dataset) == 0:
            raise ValueError(f"The {split} data ({where}) has no records.")
        feature = dataset.features["translation"]
        found = translation_languages(feature)
        if found is None:
            raise ValueError(
                f"The {split} data ({where}): `translation` should map language codes to texts, it holds {feature}."
            )
        unknown = [lang for lang in languages if lang not in found]
        if unknown:
            raise ValueError(
                f"The {split} data ({where}) has no {' or '.join(map(repr, unknown))} texts: its languages are "
                f"{sorted(found)}. Check --source_lang and --target_lang."
            )
        if isinstance(feature, dict):
            for lang in languages:
                if feature[lang].dtype not in ("string", "large_string"):
                    raise ValueError(
                        f"The {split} data ({where}): the {lang!r} texts should be strings, they are "
                        f"{feature[lang].dtype}."
                    )
        column = dataset.with_format("arrow")[:]["translation"].combine_chunks()
        for lang in languages:
            texts = pc.struct_field(column, lang)
            empty = pc.equal(pc.utf8_trim_whitespace(texts), "")
            bad = pc.fill_null(pc.or_kleene(pc.is_null(column), pc.or_kleene(pc.is_null(texts), empty)), True)
            if pc.any(bad).as_py():
                index = int(pc.index(bad, True).as_py())
                place = (
                    f"{where}, {_line_number(where, index, len(dataset))}"
                    if os.path.isfile(where)
                    else f"{where}, row {index}"
                )
                raise ValueError(
                    f"The {split} data has a record without a {lang!r} text ({place}): "
                    f"{dataset[index]['translation']}. Every record needs non-empty {languages[0]!r} and "
                    f"{languages[1]!r} texts."
                )


class CardTrainer(Seq2SeqTrainer):
    """A Seq2SeqTrainer whose model card (also the one `push_to_hub` writes) has `card_metadata` too: the
    pipeline_tag and widget that the Hub and `scripts/release/push_to_hub.py` read."""

    card_metadata: dict = {}

    def create_model_card(self, **kwargs):
        super().create_model_card(**kwargs)
        if self.is_world_process_zero():
            update_model_card(self.args.output_dir, self.card_metadata, default_model_name=True)


def parse_args(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataTrainingArguments, Seq2SeqTrainingArguments]:
    """The arguments from the command line (`argv`, default `sys.argv[1:]`), or from one `.json`/`.yaml` file."""
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, Seq2SeqTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(yaml_file=os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args = parse_args(argv)

    setup_logging(training_args, logger)
    check_launch(training_args)  # several processes launched must form one group

    last_checkpoint = detect_last_checkpoint(training_args)
    set_seed(training_args.seed)

    needed = {"train": training_args.do_train, "validation": training_args.do_eval, "test": training_args.do_predict}
    if not any(needed.values()):
        logger.warning("Nothing to do: pass --do_train, --do_eval and/or --do_predict.")
    if data_args.uses_files:
        flags = {"train": "--train_file", "validation": "--validation_file", "test": "--test_file"}
        for split, wanted in needed.items():
            if wanted and getattr(data_args, flags[split].lstrip("-")) is None:
                action = {"train": "--do_train", "validation": "--do_eval", "test": "--do_predict"}[split]
                raise ValueError(f"{action} needs a {flags[split]}.")
    raw, sources = load_raw_datasets(data_args, model_args, training_args)
    for split, wanted in needed.items():
        if wanted and split not in raw:
            action = {"train": "--do_train", "validation": "--do_eval", "test": "--do_predict"}[split]
            raise ValueError(f"{action} requires a {split} dataset (splits: {list(raw)}).")
    raw = datasets.DatasetDict({split: dataset for split, dataset in raw.items() if needed.get(split)})
    limits = {
        "train": data_args.max_train_samples,
        "validation": data_args.max_eval_samples,
        "test": data_args.max_predict_samples,
    }
    for split in raw:
        if limits[split] is not None:
            raw[split] = raw[split].select(range(min(limits[split], len(raw[split]))))
    source_lang, target_lang = data_args.languages
    check_translations(raw, sources, (source_lang, target_lang))

    tokenizer = AutoTokenizer.from_pretrained(
        model_args.tokenizer_name or model_args.model_name_or_path,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
    )
    model = load_model(model_args, AutoModelForSeq2SeqLM)
    check_tokenizer(tokenizer, model, model_args)
    if model.config.decoder_start_token_id is None:
        raise ValueError(
            f"The model config of {model_args.model_name_or_path} has no decoder_start_token_id: set it (T5: the pad "
            "id 0; Marian: the pad id)."
        )
    if data_args.source_prefix is None and model.config.model_type in T5_MODEL_TYPES:
        logger.warning(
            "You're running a t5 model but didn't provide a source prefix, which is expected, e.g. with "
            f'`--source_prefix "translate English to German: "` (here: {source_lang} to {target_lang}).'
        )
    prefix = data_args.source_prefix or ""
    if data_args.forced_bos_token is not None:
        forced_bos_token_id = tokenizer.convert_tokens_to_ids(data_args.forced_bos_token)
        if forced_bos_token_id is None or forced_bos_token_id == tokenizer.unk_token_id:
            raise ValueError(f"--forced_bos_token {data_args.forced_bos_token!r} is not a token of the tokenizer.")
        model.config.forced_bos_token_id = forced_bos_token_id
        model.generation_config.forced_bos_token_id = forced_bos_token_id

    for flag in ("max_source_length", "max_target_length", "val_max_target_length"):
        if getattr(data_args, flag) > tokenizer.model_max_length:
            logger.warning(
                f"--{flag} {getattr(data_args, flag)} is larger than the model's maximum length "
                f"({tokenizer.model_max_length}): using {tokenizer.model_max_length}."
            )
            setattr(data_args, flag, tokenizer.model_max_length)
    padding = "max_length" if data_args.pad_to_max_length else False
    if training_args.label_smoothing_factor > 0 and not hasattr(model, "prepare_decoder_input_ids_from_labels"):
        logger.warning(
            f"Label smoothing is enabled but {type(model).__name__} has no `prepare_decoder_input_ids_from_labels`: "
            "the loss is computed twice."
        )

    def preprocess(examples, max_target_length: int):
        inputs = [prefix + pair[source_lang] for pair in examples["translation"]]
        targets = [pair[target_lang] for pair in examples["translation"]]
        model_inputs = tokenizer(inputs, max_length=data_args.max_source_length, padding=padding, truncation=True)
        labels = tokenizer(text_target=targets, max_length=max_target_length, padding=padding, truncation=True)
        if padding == "max_length" and data_args.ignore_pad_token_for_loss:  # -100: left out of the loss
            labels["input_ids"] = [
                [(token if token != tokenizer.pad_token_id else -100) for token in label]
                for label in labels["input_ids"]
            ]
        model_inputs["labels"] = labels["input_ids"]
        return model_inputs

    with training_args.main_process_first(desc="dataset map pre-processing"):
        tokenized = datasets.DatasetDict(
            {
                split: dataset.map(
                    preprocess,
                    batched=True,
                    num_proc=data_args.preprocessing_num_workers,
                    remove_columns=dataset.column_names,
                    load_from_cache_file=not data_args.overwrite_cache,
                    fn_kwargs={
                        "max_target_length": (
                            data_args.max_target_length if split == "train" else data_args.val_max_target_length
                        )
                    },
                    desc=f"Running tokenizer on the {split} data",
                )
                for split, dataset in raw.items()
            }
        )
    train_dataset = tokenized.get("train")
    if training_args.do_train:
        for index in random.sample(range(len(train_dataset)), min(3, len(train_dataset))):
            logger.info(f"Sample {index} of the training set: {train_dataset[index]}.")

    label_pad_token_id = -100 if data_args.ignore_pad_token_for_loss else tokenizer.pad_token_id
    if data_args.pad_to_max_length:
        data_collator = default_data_collator
    else:
        multiple = 8 if training_args.fp16 or training_args.bf16 else None
        data_collator = DataCollatorForSeq2Seq(
            tokenizer, model=model, label_pad_token_id=label_pad_token_id, pad_to_multiple_of=multiple
        )

    def decode(token_ids) -> list[str]:
        token_ids = np.where(token_ids != -100, token_ids, tokenizer.pad_token_id)
        return [text.strip() for text in tokenizer.batch_decode(token_ids, skip_special_tokens=True)]

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        predictions = (
            prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        )
        hypotheses, references = decode(predictions), decode(prediction.label_ids)
        generated = np.where(predictions != -100, predictions, tokenizer.pad_token_id)
        return {
            "bleu": round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 4),
            "chrf": round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 4),
            "gen_len": round(float(np.mean(np.count_nonzero(generated != tokenizer.pad_token_id, axis=-1))), 4),
        }

    if (training_args.do_eval or training_args.do_predict) and not training_args.predict_with_generate:
        logger.warning("Without --predict_with_generate, evaluate and predict give the loss only (no BLEU, no chrF).")
    trainer = CardTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset if training_args.do_train else None,
        eval_dataset=tokenized.get("validation") if training_args.do_eval else None,
        processing_class=tokenizer,
        data_collator=data_collator,
        compute_metrics=compute_metrics if training_args.predict_with_generate else None,
    )

    results = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or last_checkpoint)
        metrics = train_result.metrics
        metrics["train_samples"] = len(train_dataset)
        trainer.save_model()  # an EA model with its code files and auto_map: it loads with trust_remote_code=True
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)

    max_length = training_args.generation_max_length or data_args.val_max_target_length
    num_beams = data_args.num_beams or training_args.generation_num_beams
    if training_args.do_eval:
        logger.info("*** Evaluate ***")
        metrics = trainer.evaluate(max_length=max_length, num_beams=num_beams, metric_key_prefix="eval")
        metrics["eval_samples"] = len(tokenized["validation"])
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)

    if training_args.do_predict:
        logger.info("*** Predict ***")
        # transformers 5 batches predictions by length too under --train_sampling_strategy group_by_length: predict
        # in the test file's order
        training_args.train_sampling_strategy = "sequential"
        predict_results = trainer.predict(
            tokenized["test"], metric_key_prefix="predict", max_length=max_length, num_beams=num_beams
        )
        metrics = predict_results.metrics
        metrics["predict_samples"] = len(tokenized["test"])
        trainer.log_metrics("predict", metrics)
        trainer.save_metrics("predict", metrics)
        results.update(metrics)
        if trainer.is_world_process_zero() and training_args.predict_with_generate:
            predictions = predict_results.predictions
            predictions = predictions[0] if isinstance(predictions, tuple) else predictions
            output_file = os.path.join(training_args.output_dir, "generated_predictions.txt")
            with open(output_file, "w", encoding="utf-8") as writer:
                writer.write("\n".join(decode(predictions)) + "\n")
            logger.info(f"Wrote {len(predictions)} translations to {output_file}")

    widget = []
    if training_args.do_train and trainer.is_world_process_zero():
        # the folder's pipeline then loads where ea_hf is not installed (trust_remote_code=True); the entry stays in
        # the config, so that --push_to_hub's save keeps it
        model.config.custom_pipelines = custom_pipelines_entry(TranslationPipeline)
        save_translation_pipeline(model, tokenizer, training_args.output_dir)
        examples = raw["validation"] if "validation" in raw else raw["train"]
        sources = [prefix + pair[source_lang] for pair in examples[: data_args.widget_examples]["translation"]]
        translate = transformers.pipeline(
            "translation", model=training_args.output_dir, trust_remote_code=True, device=model.device
        )
        widget = [
            {"text": text, "output": {"text": translate(text)[0]["translation_text"]}} for text in sources
        ]  # what the model gives: push_to_hub.py checks that the remote code gives it too
    kwargs = {
        "finetuned_from": model_args.model_name_or_path,
        "tasks": "translation",
        "language": [source_lang, target_lang],
        "license": data_args.license,
    }
    if data_args.dataset_name is None and data_args.card_dataset is not None:
        kwargs["dataset_tags"] = kwargs["dataset"] = data_args.card_dataset
    if data_args.dataset_name is not None:
        kwargs["dataset_tags"] = data_args.dataset_name
        if data_args.dataset_config_name is not None:
            kwargs["dataset_args"] = data_args.dataset_config_name
            kwargs["dataset"] = f"{data_args.dataset_name} {data_args.dataset_config_name}"
        else:
            kwargs["dataset"] = data_args.dataset_name
    if model_args.model_type == "ea":
        kwargs["tags"] = ["evolving-attention", "custom_code"]
    dataset = data_args.dataset_name or data_args.card_dataset
    scores = [metric for metric in ("bleu", "chrf") if f"eval_{metric}" in results] if dataset else []
    trainer.card_metadata = {
        "pipeline_tag": "translation",
        "widget": widget,
        "eval_results": [  # Trainer's card leaves translation out of the model-index
            EvalResult(
                "translation",
                dataset,
                dataset,
                metric,
                results[f"eval_{metric}"],
                dataset_args=data_args.dataset_config_name,
            )
            for metric in scores
        ],
    }
    if training_args.push_to_hub:
        trainer.push_to_hub(**kwargs)
    else:
        trainer.create_model_card(**kwargs)
    return results


if __name__ == "__main__":
    main()
