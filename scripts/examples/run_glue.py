#!/usr/bin/env python
"""Fine-tune a sequence classifier (or regressor) on a GLUE task or on your own CSV/JSON files, with evolving
attention: transformers' `examples/pytorch/text-classification/run_glue.py`, same arguments and outputs, plus
`--model_type` and the EA switches (`--ea_alpha`, `--ea_beta`, `--ea_kernel_size`, `--ea_activation`).

    python scripts/examples/run_glue.py --model_name_or_path google-bert/bert-base-cased --task_name mrpc \\
        --do_train --do_eval --max_seq_length 128 --per_device_train_batch_size 32 --learning_rate 2e-5 \\
        --num_train_epochs 3 --output_dir /tmp/mrpc

fine-tunes EA-BERT, converted on the fly from the vanilla checkpoint (`--model_type vanilla`: transformers' BERT, for
comparisons); an EA checkpoint loads as it is. Arguments come from the command line or one `.json`/`.yaml` file;
`accelerate launch scripts/examples/run_glue.py ...` trains on several processes.

Data: `--task_name` (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli) loads `nyu-mll/glue` from the Hub; or
`--train_file`, `--validation_file`, `--test_file` (CSV or JSON, all of one kind; with `--task_name` too, the task
picks the columns and the metric). Label column `label`; text columns: the task's, else `sentence1` + `sentence2`,
else `sentence`, else the first one or two other columns (`idx` is skipped). Float labels mean regression. Missing
columns or values, a validation/test label the training data lacks (-1 marks an unlabelled test row, as in GLUE) and
mixed file kinds are refused before anything is trained.

Metrics (computed offline with scikit-learn and scipy, as `evaluate`'s GLUE metric does): accuracy; F1 and accuracy
for MRPC and QQP; Matthews correlation for CoLA; Pearson and Spearman for STS-B (and for regression without a task,
with the MSE); `combined_score`, their mean, where a task has several. MNLI is evaluated on validation_matched and
validation_mismatched (`_mm` metrics). Outputs in `--output_dir`: the model (an EA model with its code and
`auto_map`), tokenizer, `train_results.json`, `eval_results.json`, `all_results.json`, `trainer_state.json`, a model
card, and with `--do_predict` `predict_results_<task>.txt` (`predict_results_None.txt` without a task, as
transformers names it). A run resumes from the last complete checkpoint in `--output_dir`.

The model card (also the one `--push_to_hub` uploads) has what `scripts/release/push_to_hub.py` checks: the
`pipeline_tag`, `--license` (apache-2.0), the dataset (`--task_name`, `--dataset_name`, or `--card_dataset` for local
files) and, for one-sentence classification, widget examples: the first `--widget_examples` validation sentences
with the outputs the trained model gives. A tokenizer with more ids than the model has embeddings, and EA switches
with `--model_type vanilla`, are refused before anything is trained.
"""

import logging
import os
import random
import sys
from dataclasses import dataclass, field

import datasets
import numpy as np
import transformers
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    HfArgumentParser,
    PreTrainedConfig,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

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


GLUE_DATASET = "nyu-mll/glue"
DATA_FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json"}  # file extension -> `datasets` builder
task_to_keys = {
    "cola": ("sentence", None),
    "mnli": ("premise", "hypothesis"),
    "mrpc": ("sentence1", "sentence2"),
    "qnli": ("question", "sentence"),
    "qqp": ("question1", "question2"),
    "rte": ("sentence1", "sentence2"),
    "sst2": ("sentence", None),
    "stsb": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}
UNLABELLED = -1  # the label of GLUE's test rows


@dataclass
class DataTrainingArguments:
    """What data to train and evaluate on (transformers' run_glue.py arguments)."""

    task_name: str | None = field(
        default=None, metadata={"help": "The GLUE task to train on: " + ", ".join(task_to_keys)}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "The name of a Hub dataset to use (via the datasets library)."}
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The configuration name of the Hub dataset."}
    )
    max_seq_length: int = field(
        default=128,
        metadata={"help": "Maximum input length in tokens after tokenization: longer inputs are truncated."},
    )
    overwrite_cache: bool = field(default=False, metadata={"help": "Tokenize again instead of using the cache."})
    pad_to_max_length: bool = field(
        default=True,
        metadata={"help": "Pad every input to max_seq_length; if False, pad each batch to its longest input."},
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
    train_file: str | None = field(default=None, metadata={"help": "A csv or a json file of training data."})
    validation_file: str | None = field(default=None, metadata={"help": "A csv or a json file of validation data."})
    test_file: str | None = field(default=None, metadata={"help": "A csv or a json file of test data."})
    license: str = field(default="apache-2.0", metadata={"help": "The model card's license (a Hub license id)."})
    card_dataset: str | None = field(
        default=None,
        metadata={"help": "The Hub dataset id the model card names for --train_file data (--dataset_name: that one)."},
    )
    widget_examples: int = field(
        default=2, metadata={"help": "Sentences of the card's widget (the first validation ones, else training)."}
    )

    def __post_init__(self):
        if self.task_name is not None:
            self.task_name = self.task_name.lower()
            if self.task_name not in task_to_keys:
                raise ValueError(f"Unknown task {self.task_name!r}, pick one of: {', '.join(task_to_keys)}.")
        if self.task_name is None and self.dataset_name is None and self.train_file is None:
            raise ValueError("Need either a GLUE task (--task_name), a dataset name or a --train_file.")

    @property
    def uses_files(self) -> bool:
        return any(path is not None for path in (self.train_file, self.validation_file, self.test_file))


def load_raw_datasets(data_args, model_args, training_args) -> datasets.DatasetDict:
    """The local files if any are given, else the GLUE task (or `--dataset_name`) from the Hub."""
    if data_args.uses_files:
        if data_args.train_file is None:
            raise ValueError("--train_file is needed with local files: the label set comes from the training data.")
        if training_args.do_eval and data_args.validation_file is None:
            raise ValueError("--do_eval needs a --validation_file.")
        if training_args.do_predict and data_args.test_file is None:
            raise ValueError("Need either a GLUE task or a --test_file for --do_predict.")
        files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
        files = {split: path for split, path in files.items() if path is not None}
        builders = {}
        for split, path in files.items():
            extension = os.path.splitext(path)[1].lower()
            if extension not in DATA_FILE_BUILDERS:
                raise ValueError(f"The {split} file {path} should be a csv or a json file (.csv, .json, .jsonl).")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"The {split} file {path} does not exist.")
            builders[split] = DATA_FILE_BUILDERS[extension]
        if len(set(builders.values())) > 1:
            kinds = ", ".join(f"{split} {path}" for split, path in files.items())
            raise ValueError(f"The data files should all be csv or all be json: {kinds}.")
        raw = datasets.DatasetDict()
        for split, path in files.items():  # one at a time: a test file may lack the label column
            logger.info(f"Loading a local file for {split}: {path}")
            raw[split] = datasets.load_dataset(
                builders[split], data_files={split: path}, split=split, cache_dir=model_args.cache_dir
            )
        return raw
    name, config = (
        (GLUE_DATASET, data_args.task_name)
        if data_args.task_name is not None
        else (data_args.dataset_name, data_args.dataset_config_name)
    )
    try:
        return datasets.load_dataset(name, config, cache_dir=model_args.cache_dir, token=model_args.token)
    except ConnectionError as error:
        raise ConnectionError(
            f"Could not load {name} ({config}) from the Hub: {error}. Offline, give the data as local files with "
            "--train_file/--validation_file/--test_file (with --task_name for the task's columns and metric)."
        ) from error


def sentence_keys(data_args, columns: list[str]) -> tuple[str, str | None]:
    """The one or two text columns (see the module docstring)."""
    if data_args.task_name is not None:
        return task_to_keys[data_args.task_name]
    others = [name for name in columns if name not in ("label", "idx")]
    if "sentence1" in others and "sentence2" in others:
        return "sentence1", "sentence2"
    if "sentence" in others:
        return "sentence", None
    if not others:
        raise ValueError(f"The training data has no text column besides `label` (columns: {columns}).")
    return others[0], (others[1] if len(others) >= 2 else None)


def check_columns(raw: datasets.DatasetDict, keys: tuple[str, str | None]) -> None:
    """Clear errors, before anything is trained, for a missing text or label column (a test file may lack labels),
    text that is not strings, and missing values."""
    for split, dataset in raw.items():
        needed = [key for key in keys if key is not None] + ([] if split.startswith("test") else ["label"])
        missing = [name for name in needed if name not in dataset.column_names]
        if missing:
            raise ValueError(
                f"The {split} data has no column {', '.join(map(repr, missing))} (columns: {dataset.column_names})."
            )
        for key in keys:
            if key is not None and dataset.features[key].dtype not in ("string", "large_string"):
                raise ValueError(
                    f"The {split} column {key!r} should hold text, it holds {dataset.features[key].dtype}."
                )
        for name in needed:
            empty = dataset.data.column(name).null_count
            if empty:
                raise ValueError(f"The {split} column {name!r} has {empty} missing values.")


def training_labels(train: datasets.Dataset) -> list:
    """The label set: a Hub ClassLabel's names in their order, else the training data's label values, sorted."""
    feature = train.features["label"]
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else sorted(train.unique("label"))


def check_labels(raw: datasets.DatasetDict, label_list: list) -> None:
    """Clear errors for a single training label and for validation/test labels the training data lacks (-1 marks an
    unlabelled test row, as in GLUE)."""
    if len(label_list) < 2:
        raise ValueError(f"The training data has a single label {label_list}: classification needs at least two.")
    for split, dataset in raw.items():
        if split == "train" or "label" not in dataset.column_names:
            continue
        if isinstance(dataset.features["label"], datasets.ClassLabel):
            allowed = set(range(len(label_list))) | {UNLABELLED}
        else:
            allowed = set(label_list) | ({UNLABELLED} if split.startswith("test") else set())
        unseen = set(dataset.unique("label")) - allowed
        if unseen:
            raise ValueError(
                f"The {split} data has labels the training data lacks: {sorted(map(str, unseen))} (training labels: "
                f"{[str(label) for label in label_list]})."
            )


def label_ids(label_list: list, class_label: bool, model_config) -> dict:
    """`label column value -> id`, and the model config's `label2id`/`id2label` set to match. A model fine-tuned on
    these labels before keeps its ids (labels matched by name, ignoring case, as transformers does); else the labels
    get ids 0, 1, ... in `label_list` order. A ClassLabel column holds indices into `label_list`."""
    default = PreTrainedConfig(num_labels=len(label_list)).label2id
    by_name = {str(name).lower(): int(index) for name, index in model_config.label2id.items()}
    if model_config.label2id != default and sorted(by_name) == sorted(str(label).lower() for label in label_list):
        label_to_id = {label: by_name[str(label).lower()] for label in label_list}
    else:
        if model_config.label2id != default:
            logger.warning(
                f"The model's labels {sorted(model_config.label2id)} do not match the data's "
                f"{[str(label) for label in label_list]}: ignoring the model's labels."
            )
        label_to_id = {label: index for index, label in enumerate(label_list)}
    model_config.label2id = {str(label): index for label, index in label_to_id.items()}
    model_config.id2label = {index: str(label) for label, index in label_to_id.items()}
    values = range(len(label_list)) if class_label else label_list
    return {value: label_to_id[label] for value, label in zip(values, label_list, strict=True)}


def glue_metrics(task_name: str | None, is_regression: bool, predictions, references) -> dict[str, float]:
    """The GLUE metric of `task_name` (see the module docstring); accuracy, or MSE, Pearson and Spearman for
    regression, without a task."""
    if is_regression:
        correlations = {"pearson": _correlation(pearsonr, predictions, references)}
        correlations["spearmanr"] = _correlation(spearmanr, predictions, references)
        if task_name is None:
            return {"mse": float(((predictions - references) ** 2).mean()), **correlations}
        result = correlations
    elif task_name == "cola":
        result = {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
    elif task_name in ("mrpc", "qqp"):
        result = {
            "accuracy": float(accuracy_score(references, predictions)),
            "f1": float(f1_score(references, predictions)),
        }
    else:
        result = {"accuracy": float(accuracy_score(references, predictions))}
    if task_name is not None and len(result) > 1:
        result["combined_score"] = float(np.mean(list(result.values())))
    return result


def _correlation(function, predictions, references) -> float:
    """Pearson or Spearman correlation; NaN (without scipy's warning) when either side is constant."""
    if np.ptp(predictions) == 0 or np.ptp(references) == 0:
        return float("nan")
    return float(function(predictions, references)[0])


class CardTrainer(Trainer):
    """A Trainer whose model card (also the one `push_to_hub` writes) has `card_metadata` too: the pipeline_tag and
    widget that the Hub and `scripts/release/push_to_hub.py` read."""

    card_metadata: dict = {}

    def create_model_card(self, **kwargs):
        super().create_model_card(**kwargs)
        if self.is_world_process_zero():
            update_model_card(self.args.output_dir, self.card_metadata)


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments]:
    """The arguments from the command line (`argv`, default `sys.argv[1:]`), or from one `.json`/`.yaml` file."""
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
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

    raw = load_raw_datasets(data_args, model_args, training_args)
    if "train" not in raw:
        raise ValueError(f"The data has no train split (splits: {list(raw)}): the label set comes from it.")
    if training_args.do_eval and "validation" not in raw and "validation_matched" not in raw:
        raise ValueError("--do_eval requires a validation dataset.")
    if training_args.do_predict and "test" not in raw and "test_matched" not in raw:
        raise ValueError("--do_predict requires a test dataset.")
    keys = sentence_keys(data_args, raw["train"].column_names)
    check_columns(raw, keys)
    if data_args.task_name is not None:
        is_regression = data_args.task_name == "stsb"
    else:
        is_regression = raw["train"].features["label"].dtype in ("float32", "float64")
    label_list = [] if is_regression else training_labels(raw["train"])
    if not is_regression:
        check_labels(raw, label_list)
    num_labels = 1 if is_regression else len(label_list)
    logger.info(f"Text columns {keys}; " + ("regression" if is_regression else f"{num_labels} labels {label_list}"))

    tokenizer = AutoTokenizer.from_pretrained(
        model_args.tokenizer_name or model_args.model_name_or_path,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
    )
    model = load_model(model_args, AutoModelForSequenceClassification, num_labels=num_labels)
    check_tokenizer(tokenizer, model, model_args)
    # The loss is a mean over the batch: without the flag, Trainer takes a vanilla head's loss for a sum and scales
    # it wrong under gradient accumulation (EA heads set it themselves; set here, EA-vs-vanilla comparisons are fair)
    model.accepts_loss_kwargs = False
    value_to_id = {}
    if not is_regression:
        class_label = isinstance(raw["train"].features["label"], datasets.ClassLabel)
        value_to_id = label_ids(label_list, class_label, model.config)

    if data_args.max_seq_length > tokenizer.model_max_length:
        logger.warning(
            f"--max_seq_length {data_args.max_seq_length} is larger than the model's maximum length "
            f"({tokenizer.model_max_length}): using {tokenizer.model_max_length}."
        )
    max_seq_length = min(data_args.max_seq_length, tokenizer.model_max_length)
    padding = "max_length" if data_args.pad_to_max_length else False

    def preprocess(examples):
        texts = (examples[keys[0]],) if keys[1] is None else (examples[keys[0]], examples[keys[1]])
        result = tokenizer(*texts, padding=padding, max_length=max_seq_length, truncation=True)
        if "label" in examples:  # a new column: `map` would keep the type of a text `label` column
            labels = examples["label"]
            result["labels"] = [float(v) for v in labels] if is_regression else [value_to_id[v] for v in labels]
        return result

    # --max_*_samples: the first rows of each split (MNLI's matched and mismatched ones alike), before tokenizing;
    # test labels (GLUE's are -1) are not used, as in transformers' script
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples}
    limits["test"] = data_args.max_predict_samples
    for split in list(raw):
        max_samples = limits.get(split.split("_")[0])
        if max_samples is not None:
            raw[split] = raw[split].select(range(min(max_samples, len(raw[split]))))
        if split.startswith("test") and "label" in raw[split].column_names:
            raw[split] = raw[split].remove_columns("label")

    with training_args.main_process_first(desc="dataset map pre-processing"):
        tokenized = datasets.DatasetDict(
            {
                split: dataset.map(
                    preprocess,
                    batched=True,
                    remove_columns=dataset.column_names,
                    load_from_cache_file=not data_args.overwrite_cache,
                    desc=f"Running tokenizer on the {split} data",
                )
                for split, dataset in raw.items()
            }
        )
    mnli = data_args.task_name == "mnli" and "validation_matched" in tokenized
    train_dataset = tokenized["train"]
    eval_splits = (
        {data_args.task_name: "validation_matched", "mnli-mm": "validation_mismatched"}
        if mnli
        else {data_args.task_name: "validation"}
    )
    predict_splits = (
        {data_args.task_name: "test_matched", "mnli-mm": "test_mismatched"} if mnli else {data_args.task_name: "test"}
    )
    eval_datasets = {task: tokenized[split] for task, split in eval_splits.items() if split in tokenized}
    predict_datasets = {task: tokenized[split] for task, split in predict_splits.items() if split in tokenized}
    if training_args.do_train:
        for index in random.sample(range(len(train_dataset)), min(3, len(train_dataset))):
            logger.info(f"Sample {index} of the training set: {train_dataset[index]}.")

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        outputs = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        outputs = np.squeeze(outputs, axis=-1) if is_regression else np.argmax(outputs, axis=-1)
        return glue_metrics(data_args.task_name, is_regression, outputs, prediction.label_ids)

    if data_args.pad_to_max_length:
        data_collator = default_data_collator
    else:
        multiple = 8 if training_args.fp16 or training_args.bf16 else None
        data_collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple)
    trainer = CardTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset if training_args.do_train else None,
        eval_dataset=next(iter(eval_datasets.values())) if training_args.do_eval else None,
        compute_metrics=compute_metrics,
        processing_class=tokenizer,
        data_collator=data_collator,
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

    if training_args.do_eval:
        logger.info("*** Evaluate ***")
        combined = {}
        for task, dataset in eval_datasets.items():
            metrics = trainer.evaluate(eval_dataset=dataset)
            metrics["eval_samples"] = len(dataset)
            if task == "mnli-mm":
                metrics = {f"{key}_mm": value for key, value in metrics.items()}
            combined.update(metrics)
        trainer.log_metrics("eval", combined)
        trainer.save_metrics("eval", combined)
        results.update(combined)

    if training_args.do_predict:
        logger.info("*** Predict ***")
        # transformers 5 batches predictions by length too under --train_sampling_strategy group_by_length: predict
        # in the test file's order
        training_args.train_sampling_strategy = "sequential"
        for task, dataset in predict_datasets.items():
            predictions = trainer.predict(dataset, metric_key_prefix="predict").predictions
            predictions = np.squeeze(predictions, axis=-1) if is_regression else np.argmax(predictions, axis=-1)
            output_file = os.path.join(training_args.output_dir, f"predict_results_{task}.txt")
            if trainer.is_world_process_zero():
                logger.info(f"***** Predict results {task} *****")
                with open(output_file, "w") as writer:
                    writer.write("index\tprediction\n")
                    for index, item in enumerate(predictions):
                        label = f"{item:3.3f}" if is_regression else model.config.id2label[int(item)]
                        writer.write(f"{index}\t{label}\n")

    widget = []
    if training_args.do_train and keys[1] is None and not is_regression and trainer.is_world_process_zero():
        # the outputs the saved folder gives: push_to_hub.py checks that the remote code gives them too
        classifier = transformers.pipeline(
            "text-classification", model=training_args.output_dir, trust_remote_code=True, device=model.device
        )
        examples = raw["validation"] if "validation" in raw else raw["train"]
        for text in examples[: data_args.widget_examples][keys[0]]:
            outputs = classifier(text, top_k=3)
            widget.append(
                {"text": text, "output": [{"label": o["label"], "score": round(o["score"], 4)} for o in outputs]}
            )
    trainer.card_metadata = {"pipeline_tag": "text-classification", "widget": widget}
    kwargs = {
        "finetuned_from": model_args.model_name_or_path,
        "tasks": "text-classification",
        "license": data_args.license,
    }
    if data_args.task_name is not None:
        kwargs.update(
            language="en", dataset_tags="glue", dataset_args=data_args.task_name,
            dataset=f"GLUE {data_args.task_name.upper()}",
        )  # fmt: skip
    elif data_args.dataset_name or data_args.card_dataset:
        kwargs["dataset_tags"] = kwargs["dataset"] = data_args.dataset_name or data_args.card_dataset
    if model_args.model_type == "ea":
        kwargs["tags"] = ["evolving-attention", "custom_code"]
    if training_args.push_to_hub:
        trainer.push_to_hub(**kwargs)
    else:
        trainer.create_model_card(**kwargs)
    return results


if __name__ == "__main__":
    main()
