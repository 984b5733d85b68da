#!/usr/bin/env python
"""Does evolving attention help? EA and its vanilla twin trained identically on real data, side by side (issue 9).

    .venv/bin/python -m scripts.research.study                 # every task; resumable
    .venv/bin/python -m scripts.research.study rotten_tomatoes basicmotions --jobs 2
    .venv/bin/python -m scripts.research.study --report        # tables and plot from the finished runs only

For each task (see `TASKS`), in two phases:

1. selection: the EA variant(s) trained once for each (`ea_alpha`, `ea_beta`) of the task's grid, with the selection
   seed (`SELECTION_SEED`), scored on the validation split only; the setting with the best validation score is
   chosen (ties: the first in the grid, the model's default);
2. comparison: every variant (the vanilla twin, EA at its chosen setting, and baselines) trained with seeds 0..n-1
   and scored on the test split. Only these runs ever read test data. Those of variants without EA need no
   selection and run first; EA's start as soon as its selection is over.

The budgets are those of the checkpoints' recipes (`scripts/release/recipes/NAME.json`, less the run settings
each study run sets itself), changed where a task says so. Each run calls one of the project's training scripts
(`scripts/examples/run_glue.py`, `run_image_classification.py`, `run_translation.py`, `run_uea.py`, or
`scripts.research.vit_conv_study`) as a subprocess with `OMP_NUM_THREADS` = `--threads`, its output in
`<run>/log.txt`, and records its metrics, wall time and CPU time (user + system of the subprocess, from
`wait4`) and the task's recipe in a record beside the report, `<results_dir>/runs/<task>/.../seed_N.json`, which is
committed with it; a recorded run is never repeated while the recipe stays the same, so the command resumes after an
interruption, in another session or on another machine too (a run cut off in the middle, as the language model's,
from its last checkpoint where its output folder is still there; its times then count the last part only), and a
run recorded with an earlier recipe is run again (and left out of the report until it is). `--jobs N` runs N at a
time. The report (`results.json`, `results.md`, `results.png` under `--results_dir`) gives, per task, mean and
standard deviation over seeds, each seed's score, and the paired comparison of EA with its twin: the mean and
standard deviation of the per-seed differences, wins/ties/losses and a paired t-test. A report is never replaced by
one with less: a task whose runs are not recorded (those of the report run before records were kept) keeps its
section as it is, and when the recorded runs of a task lack a comparison that the report has, nothing is written and
the command exits with an error naming what is missing and the command that produces it.
"""

import argparse
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from scripts.data import prepare_data
from scripts.release import build_checkpoints


logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SELECTION_SEED = 100  # never one of the comparison seeds 0..n-1
# (ea_alpha, ea_beta) settings tried in selection; the EA-BERT, EA-ViT and EA-Marian default first
DEFAULT_GRID = ((0.1, 0.1), (0.1, 0.5), (0.5, 0.1), (0.5, 0.5))


@dataclass(frozen=True)
class Run:
    """One training run: `variant` of `task`, EA at (`alpha`, `beta`) (None for variants without EA), one seed;
    `test` says whether it is a comparison run (scored on test) or a selection run (validation only)."""

    task: str
    variant: str
    seed: int
    test: bool
    alpha: float | None = None
    beta: float | None = None

    def folder(self, output_dir: Path) -> Path:
        setting = f"alpha{self.alpha}_beta{self.beta}" if self.alpha is not None else "no_ea"
        phase = "comparison" if self.test else "selection"
        return output_dir / self.task / phase / self.variant.replace(" ", "_") / setting / f"seed_{self.seed}"

    def record(self, records_dir: Path) -> Path:
        """The finished run's record under `records_dir`, named as its folder."""
        return self.folder(records_dir).with_suffix(".json")


@dataclass
class Task:
    """A side-by-side comparison. `variants` maps a name to whether it has EA (and is swept); `twin` is the vanilla
    variant every EA variant is compared with. `commands(run, out, work, data_dir)` gives the argv lists the run
    executes in order (first a script file, relative to the repository root, or a module; `out` the run's output
    folder, `work` the task's folder, where `prepare(work,
    data_dir)` put the shared inputs); `score(run, out, data_dir)` reads its metrics, `{metric: value}` on validation
    and, for a comparison run, on test (keys `validation` and `test` hold the headline metric). `recipe` is the budget
    the commands use (recorded with each run and in the report)."""

    name: str
    title: str
    metric: str
    variants: dict[str, bool]
    twin: str
    seeds: int
    commands: Callable[[Run, Path, Path, Path], list[list[str]]]
    score: Callable[[Run, Path, Path], dict[str, float]]
    recipe: dict
    prepare: Callable[[Path, Path], None] = lambda work, data_dir: None
    grid: tuple[tuple[float, float], ...] = DEFAULT_GRID
    uses_gpu: bool = True  # its script trains on a GPU when one is visible (Trainer does)
    higher_is_better: bool = True  # False for perplexity: choice and wins go to the lower score
    resumes: bool = False  # its script saves checkpoints and resumes from the last one in its output folder

    def selection_runs(self) -> list[Run]:
        return [
            Run(self.name, variant, SELECTION_SEED, False, alpha, beta)
            for variant, ea in self.variants.items()
            if ea
            for alpha, beta in self.grid
        ]

    def comparison_runs(self, chosen: dict[str, tuple[float, float]]) -> list[Run]:
        """The comparison runs of the variants without EA, and of the EA variants at their `chosen` setting."""
        return [
            Run(self.name, variant, seed, True, *chosen.get(variant, (None, None)))
            for seed in range(self.seeds)
            for variant, ea in self.variants.items()
            if not ea or variant in chosen
        ]


def ea_arguments(run: Run) -> list[str]:
    return [] if run.alpha is None else ["--ea_alpha", str(run.alpha), "--ea_beta", str(run.beta)]


def as_arguments(recipe: dict) -> list[str]:
    """Command-line arguments (`--key value`) from an argument dict."""
    return [item for key, value in recipe.items() for item in (f"--{key}", str(value))]


# the arguments of a checkpoint's recipe that are no part of its training budget: every study run sets its own
RUN_SETTINGS = {
    "seed", "do_train", "do_eval", "do_predict", "predict_with_generate", "source_lang", "target_lang",
    "train_sampling_strategy", "pad_to_max_length", "save_strategy", "save_steps", "save_total_limit",
    "logging_steps", "report_to",
}  # fmt: skip


def budget(checkpoint: str) -> dict:
    """The training budget of a checkpoint's recipe (`scripts/release/recipes/NAME.json`): its arguments less
    `RUN_SETTINGS`."""
    return {key: value for key, value in build_checkpoints.read_recipe(checkpoint).items() if key not in RUN_SETTINGS}


# --- Rotten Tomatoes: all-MiniLM-L6-v2 fine-tuned (run_glue.py) ---------------------------------------------------

GLUE_STUDY = {**budget("ea-minilm-l6-rotten-tomatoes"), "max_train_samples": 3000}


def glue_commands(run: Run, folder: Path, work: Path, data_dir: Path) -> list[list[str]]:
    data = data_dir / "rotten_tomatoes"
    recipe = {**GLUE_STUDY, "seed": run.seed}
    test = ["--test_file", str(data / "test.csv"), "--do_predict"] if run.test else []
    return [[
        "scripts/examples/run_glue.py", "--model_name_or_path", build_checkpoints.minilm_path(),
        "--model_type", "vanilla" if run.alpha is None else "ea", *ea_arguments(run),
        "--train_file", str(data / "train.csv"), "--validation_file", str(data / "validation.csv"), *test,
        "--do_train", "--do_eval", *as_arguments(recipe),
        "--train_sampling_strategy", "group_by_length", "--pad_to_max_length", "false",
        "--save_strategy", "no", "--logging_steps", "20", "--report_to", "none", "--output_dir", str(folder),
    ]]  # fmt: skip


def glue_score(run: Run, folder: Path, data_dir: Path) -> dict[str, float]:
    scores = {"validation": build_checkpoints.run_results(folder)["eval_accuracy"]}
    if run.test:
        labels = build_checkpoints.rotten_tomatoes_splits(data_dir)["test"][1]
        with open(folder / "predict_results_None.txt", encoding="utf-8") as file:
            predictions = [line.rstrip("\n").split("\t")[1] for line in file.readlines()[1:]]
        if len(predictions) != len(labels):
            raise ValueError(f"{folder}: {len(predictions)} test predictions for {len(labels)} test sentences")
        scores["test"] = statistics.mean(p == label for p, label in zip(predictions, labels, strict=True))
    return scores


# --- Fashion-MNIST: the pretrained ViT-S/14 fine-tuned (run_image_classification.py) ------------------------------

IMAGE_STUDY = {**budget("ea-vit-small-patch14-fashion-mnist"), "image_size": 56, "learning_rate": 1e-4}


def vit_s14_commands(run: Run, folder: Path, work: Path, data_dir: Path) -> list[list[str]]:
    images = data_dir / "fashion_mnist"
    model_type = "vanilla" if run.alpha is None else "ea"
    recipe = {**IMAGE_STUDY, "seed": run.seed}
    commands = [[
        "scripts/examples/run_image_classification.py", "--model_name_or_path", str(work / "base"),
        "--model_type", model_type, *ea_arguments(run),
        "--train_dir", str(images / "train"), "--validation_dir", str(images / "validation"),
        "--do_train", "--do_eval", *as_arguments(recipe),
        "--save_strategy", "no", "--logging_steps", "10", "--report_to", "none", "--output_dir", str(folder),
    ]]  # fmt: skip
    if run.test:  # the trained model on every test image: a separate evaluation (the script has no test split; the
        # training folder only gives the label set)
        commands.append([
            "scripts/examples/run_image_classification.py", "--model_name_or_path", str(folder),
            "--model_type", model_type,
            "--train_dir", str(images / "train"), "--validation_dir", str(images / "test"), "--do_eval",
            "--image_size", str(IMAGE_STUDY["image_size"]), "--per_device_eval_batch_size", "64",
            "--report_to", "none", "--output_dir", str(folder / "test"),
        ])  # fmt: skip
    return commands


def vit_s14_score(run: Run, folder: Path, data_dir: Path) -> dict[str, float]:
    scores = {"validation": build_checkpoints.run_results(folder)["eval_accuracy"]}
    if run.test:
        scores["test"] = build_checkpoints.run_results(folder / "test")["eval_accuracy"]
    return scores


# --- Fashion-MNIST: a small ViT from scratch, raster and 2-D grid EA conv (vit_conv_study.py) -----------------------

SMALL_VIT_STUDY = {"train_size": 10000, "validation_size": 5000, "epochs": 3, "batch_size": 64, "learning_rate": 2e-3}


def small_vit_commands(run: Run, folder: Path, work: Path, data_dir: Path) -> list[list[str]]:
    alpha_beta = ea_arguments(run) or ["--ea_alpha", "0", "--ea_beta", "0"]  # (vanilla: not read)
    return [[
        "scripts.research.vit_conv_study", "--data_dir", prepare_data.FASHION_MNIST_DIR, "--variants", run.variant,
        "--seeds", str(run.seed), *alpha_beta, *as_arguments(SMALL_VIT_STUDY),
        *(["--test"] if run.test else []), "--output", str(folder / "results.json"),
    ]]  # fmt: skip


def small_vit_score(run: Run, folder: Path, data_dir: Path) -> dict[str, float]:
    result = json.loads((folder / "results.json").read_text())[run.variant]["runs"][0]
    return {"validation": result["accuracy"], **({"test": result["test_accuracy"]} if run.test else {})}


# --- English-Spanish verses: a small Marian from scratch (run_translation.py) --------------------------------------

# the checkpoint's budget (every training pair, 1 epoch), greedy: 10,000 pairs (313 steps) left the model at the
# unigram stage (validation BLEU 0.15 for every setting), which cannot tell EA from vanilla
TRANSLATION_STUDY = {**budget(build_checkpoints.MARIAN), "generation_num_beams": 1}


def marian_commands(run: Run, folder: Path, work: Path, data_dir: Path) -> list[list[str]]:
    verses = data_dir / "verses"
    recipe = {**TRANSLATION_STUDY, "seed": run.seed}
    test = ["--test_file", str(verses / "test.jsonl"), "--do_predict"] if run.test else []
    return [[
        "scripts/examples/run_translation.py", "--model_name_or_path", str(work / "init"),
        "--model_type", "vanilla" if run.alpha is None else "ea", *ea_arguments(run),
        "--train_file", str(verses / "train.jsonl"), "--validation_file", str(verses / "validation.jsonl"), *test,
        "--source_lang", "en", "--target_lang", "es", "--do_train", "--do_eval", "--predict_with_generate",
        *as_arguments(recipe), "--train_sampling_strategy", "group_by_length",
        "--save_strategy", "no", "--logging_steps", "50", "--report_to", "none", "--output_dir", str(folder),
    ]]  # fmt: skip


def marian_score(run: Run, folder: Path, data_dir: Path) -> dict[str, float]:
    results = build_checkpoints.run_results(folder)
    scores = {"validation": results["eval_bleu"], "validation_chrf": results["eval_chrf"]}
    if run.test:
        scores |= {"test": results["predict_bleu"], "test_chrf": results["predict_chrf"]}
    return scores


# --- English verses: a small Llama from scratch (run_clm.py) ------------------------------------------------------

# the released checkpoint's recipe at 15x its 600 steps (10 epochs of the verses), each run keeping its best
# evaluation's model: at 3,600, 5,400 and 7,200 steps the vanilla twin's validation perplexity still fell by 8.1, 4.8
# and 2.8 % over the last fifth of training; at 9,000 it was best at 6,300-7,200 steps and then rose by 3.6-5.2 % as
# the twin overfit (benchmarks/study/lm_budget.md)
LM_STUDY = {**budget(build_checkpoints.LLAMA), "max_steps": 9000, "eval_steps": 900, "load_best_model_at_end": True}
LM_GRID = ((0.1, 0.1), (0.1, 0.5), (0.5, 0.5))


def llama_commands(run: Run, folder: Path, work: Path, data_dir: Path) -> list[list[str]]:
    inputs = build_checkpoints.llama_inputs(work, data_dir)  # the tokenizer and config that `prepare_llama` made
    if not run.test:
        inputs.pop("test_file")
    recipe = {**LM_STUDY, "seed": run.seed}  # the seed also draws the twins' common random initial model
    return [[
        "scripts/examples/run_clm.py", *as_arguments(inputs), "--model_type", "vanilla" if run.alpha is None else "ea",
        *ea_arguments(run), "--do_train", "--do_eval", *(["--do_predict"] if run.test else []),
        *as_arguments(recipe), "--save_strategy", "steps", "--save_steps", str(recipe["eval_steps"]),
        "--save_total_limit", "1", "--logging_steps", "50", "--report_to", "none", "--output_dir", str(folder),
    ]]  # fmt: skip


def last_fifth(folder: Path) -> dict[str, float]:
    """How validation perplexity changed over the last fifth of training, from the run's `trainer_state.json`:
    `plateau`, the fall of the best perplexity so far (the model the run keeps) from the first evaluation at or after
    80 % of the steps to the end, relative (>= 0); `last_fifth`, the signed relative change of the evaluated
    perplexity itself (> 0: it rose, the model overfits)."""
    state = json.loads((folder / "trainer_state.json").read_text())
    curve = [(log["step"], math.exp(log["eval_loss"])) for log in state["log_history"] if "eval_loss" in log]
    start = next(i for i, (step, _) in enumerate(curve) if step >= 0.8 * state["global_step"])
    best_then = min(ppl for _, ppl in curve[: start + 1])
    best, then, last = min(ppl for _, ppl in curve), curve[start][1], curve[-1][1]
    return {"plateau": (best_then - best) / best_then, "last_fifth": (last - then) / then}


def llama_score(run: Run, folder: Path, data_dir: Path) -> dict[str, float]:
    results = build_checkpoints.run_results(folder)
    scores = {"validation": results["perplexity"], **last_fifth(folder)}
    return scores | ({"test": results["predict_perplexity"]} if run.test else {})


# --- UEA time series: EA-DC-Transformer, DC-Transformer, TST-style (run_uea.py) -----------------------------------

UEA_STUDY = {"num_train_epochs": 100}
UEA_MODEL_TYPES = {"TST-style": "tst", "DC": "dc", "EA-DC": "ea_dc"}


def uea_commands(dataset: str) -> Callable[[Run, Path, Path, Path], list[list[str]]]:
    def commands(run: Run, folder: Path, work: Path, data_dir: Path) -> list[list[str]]:
        return [[
            "scripts/examples/run_uea.py", "--dataset_name", dataset, "--model_type", UEA_MODEL_TYPES[run.variant],
            *ea_arguments(run), "--seeds", str(run.seed), *as_arguments(UEA_STUDY),
            "--score_test", str(run.test).lower(), "--output_dir", str(folder),
        ]]  # fmt: skip

    return commands


def uea_score(run: Run, folder: Path, data_dir: Path) -> dict[str, float]:
    result = build_checkpoints.run_results(folder / f"seed_{run.seed}")
    return {"validation": result["eval_accuracy"], **({"test": result["test_accuracy"]} if run.test else {})}


TASKS = {
    task.name: task
    for task in (
        Task(
            "rotten_tomatoes", "Rotten Tomatoes: all-MiniLM-L6-v2 fine-tuned", "accuracy",
            {"vanilla": False, "EA": True}, "vanilla", 5, glue_commands, glue_score, GLUE_STUDY,
            build_checkpoints.prepare_rotten_tomatoes,
        ),
        Task(
            "fashion_mnist_vit_s14", "Fashion-MNIST: pretrained ViT-S/14 fine-tuned", "accuracy",
            {"vanilla": False, "EA": True}, "vanilla", 3, vit_s14_commands, vit_s14_score, IMAGE_STUDY,
            build_checkpoints.prepare_vit,  # Fashion-MNIST image folders, and work/base: the ViT-S/14 from the ONNX
        ),
        Task(
            "fashion_mnist_small_vit", "Fashion-MNIST: a small ViT from scratch", "accuracy",
            {"vanilla": False, "EA raster": True, "EA grid": True}, "vanilla", 3, small_vit_commands,
            small_vit_score, SMALL_VIT_STUDY, uses_gpu=False,
        ),
        Task(
            "translation_en_es", "English-Spanish verses: a small Marian from scratch", "BLEU",
            {"vanilla": False, "EA": True}, "vanilla", 3, marian_commands, marian_score,
            {**build_checkpoints.read_recipe(f"{build_checkpoints.MARIAN}.init"), **TRANSLATION_STUDY},
            build_checkpoints.prepare_marian,
        ),
        Task(
            "lm_verses", "English verses: a small Llama from scratch", "perplexity (lower is better)",
            {"vanilla": False, "EA": True}, "vanilla", 3, llama_commands, llama_score,
            {**build_checkpoints.read_recipe(f"{build_checkpoints.LLAMA}.init"), **LM_STUDY},
            build_checkpoints.prepare_llama, grid=LM_GRID, higher_is_better=False, resumes=True,
        ),
        *(
            Task(
                dataset.lower(), f"{dataset}: DC-Transformer with and without EA, and a TST-style Transformer",
                "accuracy", {"TST-style": False, "DC": False, "EA-DC": True}, "DC", 5, uea_commands(dataset),
                uea_score, {"dataset": dataset, **UEA_STUDY},
                grid=((0.3, 0.7), (0.1, 0.7), (0.3, 0.3), (0.1, 0.3)),  # the authors' default first
            )
            for dataset in ("BasicMotions", "JapaneseVowels")
        ),
    )
}  # fmt: skip


# --- running ------------------------------------------------------------------------------------------------------


def device_name(uses_gpu: bool) -> str:
    if uses_gpu and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU"


def current(task: Task, record: dict) -> bool:
    """Whether `record` was run with `task`'s recipe as it is now (a run with an earlier budget is not)."""
    return record.get("recipe") == json.loads(json.dumps(task.recipe))


def argv(command: list[str]) -> list[str]:
    """`python FILE ...` for a script file (relative to the repository root), `python -m MODULE ...` for a module."""
    program = [str(ROOT / command[0])] if command[0].endswith(".py") else ["-m", command[0]]
    return [sys.executable, *program, *command[1:]]


def execute(task: Task, run: Run, output_dir: Path, records_dir: Path, data_dir: Path, threads: int) -> dict:
    """Train and score `run` unless its record under `records_dir` exists with the task's current recipe; returns
    that record. The scripts write into `<run>/run/`, which an interrupted (or outdated) run left behind is removed
    first: the run starts over; for a task that `resumes`, a run folder holding a complete checkpoint is kept, and
    the script resumes from it."""
    folder = run.folder(output_dir)
    record_file = run.record(records_dir)
    if record_file.is_file():
        record = json.loads(record_file.read_text())
        if current(task, record):
            return record
        logger.warning(f"{run} was run with recipe {record.get('recipe')}, not {task.recipe}: running it again")
        record_file.unlink()
    out = folder / "run"
    if not (task.resumes and any(out.glob("checkpoint-*/trainer_state.json"))):
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    cpu_seconds, start = 0.0, time.perf_counter()
    with open(folder / "log.txt", "a") as log:
        for command in task.commands(run, out, output_dir / task.name, data_dir):
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            process = subprocess.Popen(argv(command), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            cpu_seconds += usage.ru_utime + usage.ru_stime
            if process.returncode != 0:
                raise RuntimeError(f"{Path(command[0]).name} failed (exit {process.returncode}); see {log.name}")
    record = {
        "run": run.__dict__,
        "recipe": task.recipe,
        "scores": task.score(run, out, data_dir),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "threads": threads,
        "device": device_name(task.uses_gpu),
    }
    record_file.parent.mkdir(parents=True, exist_ok=True)
    record_file.write_text(json.dumps(record, indent=2) + "\n")
    return record


def execute_all(tasks: list[Task], output_dir: Path, records_dir: Path, data_dir: Path, threads: int, parallel: int):
    """Every run of `tasks`, `parallel` at a time: first the comparison runs without EA (which need no selection;
    the twin's runs tell first whether the budget reaches a plateau) and the selection runs, then a task's EA
    comparison runs as soon as its selection is over; returns {run: record}. A failed run is reported and the rest
    go on; raises at the end if any failed."""
    records, failures, futures = {}, [], {}
    selecting = {task.name: set(task.selection_runs()) for task in tasks}
    with ThreadPoolExecutor(max_workers=parallel) as pool, tqdm(total=0, desc="runs", unit="run") as progress:

        def submit(task: Task, runs: list[Run]) -> None:
            for run in runs:
                futures[pool.submit(execute, task, run, output_dir, records_dir, data_dir, threads)] = task, run
            progress.total += len(runs)
            progress.refresh()

        def after_selection(task: Task) -> None:
            twins = task.comparison_runs({})
            submit(task, [run for run in task.comparison_runs(choose(task, records)[0]) if run not in twins])

        for task in tasks:
            submit(task, task.comparison_runs({}) + task.selection_runs())
            if not selecting[task.name]:
                after_selection(task)
        while futures:
            for future in wait(futures, return_when=FIRST_COMPLETED).done:
                task, run = futures.pop(future)
                try:
                    records[run] = future.result()
                    progress.set_postfix_str(f"{run.task} {run.variant} seed {run.seed}: {records[run]['scores']}")
                except Exception as error:  # noqa: BLE001 (each failure is reported below, then raised)
                    failures.append(f"{run}: {error}")
                    logger.error(f"{run}: {error}")
                progress.update()
                if run in selecting[task.name]:
                    selecting[task.name].remove(run)
                    if not selecting[task.name]:
                        after_selection(task)
    if failures:
        raise RuntimeError(f"{len(failures)} run(s) failed:\n" + "\n".join(failures))
    return records


def finished_runs(records_dir: Path) -> dict[Run, dict]:
    """{run: record} of every run recorded under `records_dir` of a task in `TASKS`, with its current recipe."""
    records = {}
    for path in sorted(records_dir.glob("*/*/*/*/seed_*.json")):
        record = json.loads(path.read_text())
        run = Run(**record["run"])
        if run.task in TASKS and current(TASKS[run.task], record):
            records[run] = record
    return records


def choose(task: Task, records: dict[Run, dict]) -> tuple[dict[str, tuple[float, float]], dict]:
    """Per EA variant, the (alpha, beta) of best validation score (ties: the first in the grid); and the grid."""
    better = 1 if task.higher_is_better else -1
    chosen, grid = {}, {}
    for variant in (variant for variant, ea in task.variants.items() if ea):
        scores = {
            (run.alpha, run.beta): records[run]["scores"]["validation"]
            for run in task.selection_runs()
            if run.variant == variant and run in records
        }
        if len(scores) == len(task.grid):
            chosen[variant] = max(task.grid, key=lambda setting: (better * scores[setting], -task.grid.index(setting)))
        grid[variant] = [{"alpha": a, "beta": b, "validation": scores.get((a, b))} for a, b in task.grid]
    return chosen, grid


def paired(ea: list[float], twin: list[float], higher_is_better: bool = True) -> dict:
    """Per-seed differences EA - twin: mean, standard deviation, wins/ties/losses (a win: EA's score better, i.e.
    lower where lower is better) and a two-sided paired t-test."""
    from scipy import stats

    differences = [a - b for a, b in zip(ea, twin, strict=True)]
    better = 1 if higher_is_better else -1
    result = {
        "differences": differences,
        "mean": statistics.mean(differences),
        "std": statistics.stdev(differences) if len(differences) > 1 else 0.0,
        "wins": sum(better * d > 0 for d in differences),
        "ties": sum(d == 0 for d in differences),
        "losses": sum(better * d < 0 for d in differences),
        "p_value": None,
    }
    if len(differences) > 1 and result["std"] > 0:
        result["p_value"] = float(stats.ttest_rel(ea, twin).pvalue)
    return result


def summarize(task: Task, records: dict[Run, dict]) -> dict:
    """One task's results: the selection grid and choice, each variant's test scores over seeds, the paired
    comparisons of EA variants with the twin, and CPU time per phase. Incomplete phases are reported as such."""
    chosen, grid = choose(task, records)
    selection = [records[run] for run in task.selection_runs() if run in records]
    summary = {
        "title": task.title,
        "metric": task.metric,
        "recipe": task.recipe,
        "seeds": task.seeds,
        "twin": task.twin,
        "grid": grid,
        "chosen": {variant: {"alpha": a, "beta": b} for variant, (a, b) in chosen.items()},
        "variants": {},
        "comparisons": {},
        "cpu_seconds": {"selection": round(sum(r["cpu_seconds"] for r in selection), 1)},
        "devices": sorted({r["device"] for r in selection}),
    }
    ea_variants = [variant for variant, ea in task.variants.items() if ea]
    if len(chosen) < len(ea_variants):
        return summary
    comparison = [run for run in task.comparison_runs(chosen) if run in records]
    summary["cpu_seconds"]["comparison"] = round(sum(records[run]["cpu_seconds"] for run in comparison), 1)
    summary["devices"] = sorted({records[run]["device"] for run in comparison} | set(summary["devices"]))
    for variant in task.variants:
        runs = [run for run in comparison if run.variant == variant]
        test = [records[run]["scores"]["test"] for run in runs]
        extra = {k: [records[run]["scores"][k] for run in runs] for k in records[runs[0]]["scores"]} if runs else {}
        summary["variants"][variant] = {
            "seeds": [run.seed for run in runs],
            "test": test,
            **mean_and_std(test),
            "scores": extra,
            "cpu_seconds_per_run": statistics.mean(records[run]["cpu_seconds"] for run in runs) if runs else None,
        }
    twin = summary["variants"][task.twin]
    for variant in ea_variants:
        ea = summary["variants"][variant]
        common = sorted(set(ea["seeds"]) & set(twin["seeds"]))
        if len(common) == task.seeds:
            higher = task.higher_is_better
            comparison = paired(by_seed(ea, "test", common), by_seed(twin, "test", common), higher)
            # the task's other test metrics (e.g. chrF beside BLEU), compared the same way
            comparison["other_metrics"] = {
                key.removeprefix("test_"): paired(by_seed(ea, key, common), by_seed(twin, key, common), higher)
                for key in ea["scores"]
                if key.startswith("test_")
            }
            summary["comparisons"][variant] = comparison
    return summary


def mean_and_std(values: list[float]) -> dict:
    """{"mean", "std"} of scores over seeds; None where there are too few."""
    return {
        "mean": statistics.mean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else None,
    }


def by_seed(variant: dict, key: str, seeds: list[int]) -> list[float]:
    """A variant summary's `key` scores (e.g. "test") for `seeds`, in that order."""
    return [variant["scores"][key][variant["seeds"].index(seed)] for seed in seeds]


# --- report -------------------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 4, sign: str = "") -> str:
    return "-" if value is None else f"{value:{sign}.{digits}f}"


def markdown(results: dict) -> str:
    """The headline table (one row per EA variant vs its twin), then per task the selection grid and each seed."""
    lines = [
        "| task | metric (test) | vanilla twin | EA | EA - twin (paired, mean +- std) | wins/ties/losses "
        "| p (paired t) | seeds | EA alpha, beta (chosen on validation) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, task in results["tasks"].items():
        twin = task["variants"].get(task["twin"], {})
        for variant, comparison in task["comparisons"].items():
            ea, setting = task["variants"][variant], task["chosen"][variant]
            label = task["title"] + (f" ({variant})" if variant != "EA" else "")
            lines.append(
                f"| {label} | {task['metric']} | {fmt(twin['mean'])} +- {fmt(twin['std'])} | {fmt(ea['mean'])} +- "
                f"{fmt(ea['std'])} | {fmt(comparison['mean'], sign='+')} +- {fmt(comparison['std'])} | "
                f"{comparison['wins']}/{comparison['ties']}/{comparison['losses']} | "
                f"{fmt(comparison['p_value'], 3)} | {len(ea['seeds'])} | {setting['alpha']}, {setting['beta']} |"
            )
    for name, task in results["tasks"].items():
        lines += ["", f"### {task['title']} (`{name}`)", "", f"Recipe: `{json.dumps(task['recipe'])}`.", ""]
        for variant, grid in task["grid"].items():
            cells = ", ".join(f"({g['alpha']}, {g['beta']}): {fmt(g['validation'])}" for g in grid)
            lines.append(
                f"- selection, {variant}, validation {task['metric']} at (alpha, beta), seed {SELECTION_SEED}: {cells}"
            )
        for variant, scores in task["variants"].items():
            # the headline metric ("test"), then the task's other test metrics ("test_chrf", ...)
            keys = ["test", *(key for key in scores["scores"] if key.startswith("test_"))]
            for key in keys:
                values = scores["scores"].get(key, [])
                seeds = ", ".join(f"{seed}: {fmt(value)}" for seed, value in zip(scores["seeds"], values))
                spread = mean_and_std(values)
                mean = f"{fmt(spread['mean'])} +- {fmt(spread['std'])}; " if values else ""
                metric = task["metric"] if key == "test" else key.removeprefix("test_")
                lines.append(f"- {variant}, test {metric}: {mean}by seed {seeds or 'not run'}")
        for variant, scores in task["variants"].items():
            if "plateau" in scores["scores"]:
                changes = zip(scores["seeds"], scores["scores"]["plateau"], scores["scores"]["last_fifth"])
                cells = ", ".join(f"{seed}: -{best:.1%} / {last:+.1%}" for seed, best, last in changes)
                metric = task["metric"].split(" (")[0]
                lines.append(
                    f"- {variant}, validation {metric} over the last fifth of training, best so far (the model kept) "
                    f"/ last evaluation: {cells}"
                )
        for variant, comparison in task["comparisons"].items():
            for metric, other in comparison["other_metrics"].items():
                lines.append(
                    f"- {variant} - {task['twin']}, test {metric} (paired): {fmt(other['mean'], sign='+')} +- "
                    f"{fmt(other['std'])}, wins/ties/losses {other['wins']}/{other['ties']}/{other['losses']}, "
                    f"p {fmt(other['p_value'], 3)}"
                )
        cpu = ", ".join(f"{phase} {seconds / 60:.0f} min" for phase, seconds in task["cpu_seconds"].items())
        lines.append(f"- CPU time: {cpu}; device: {', '.join(task['devices']) or '-'}")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """One panel per task: each seed's test score per variant, the seeds of a pair joined by a line, means as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = {name: task for name, task in results["tasks"].items() if task["comparisons"]}
    if not tasks:
        return
    figure, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.4), squeeze=False)
    for axis, (name, task) in zip(axes[0], tasks.items()):
        variants = [variant for variant, scores in task["variants"].items() if scores["test"]]
        for index, variant in enumerate(variants):
            scores = task["variants"][variant]
            axis.bar(index, scores["mean"], color="#9ecae1" if variant == task["twin"] else "#fdae6b", alpha=0.6)
        common = sorted(set.intersection(*(set(task["variants"][v]["seeds"]) for v in variants)))
        for values in zip(*(by_seed(task["variants"][v], "test", common) for v in variants)):  # one line a seed
            axis.plot(range(len(variants)), values, marker="o", color="0.3", linewidth=0.8, markersize=3)
        low = min(min(task["variants"][v]["test"]) for v in variants)
        high = max(max(task["variants"][v]["test"]) for v in variants)
        axis.set_ylim(low - 0.1 * (high - low + 1e-3) - 0.01, high + 0.1 * (high - low + 1e-3) + 0.01)
        axis.set_xticks(range(len(variants)), variants, rotation=20)
        axis.set_title(name, fontsize=9)
        axis.set_ylabel(f"test {task['metric']}")
    figure.suptitle("EA vs its vanilla twin: test score per seed (lines join a seed's runs), bars: means", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def lost_comparisons(path: Path, results: dict) -> list[str]:
    """The "task (variant)" comparisons of the report at `path` (of tasks still in `TASKS`) that `results` lacks:
    a report is never replaced by an empty or partial one."""
    if not path.exists():
        return []
    old = json.loads(path.read_text())["tasks"]
    return [
        f"{name} ({variant})"
        for name, task in old.items()
        if name in TASKS
        for variant in task["comparisons"]
        if variant not in results["tasks"].get(name, {}).get("comparisons", {})
    ]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="*", metavar="TASK", help=f"default: all of {', '.join(TASKS)}")
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/study"), help="the runs' output folders")
    parser.add_argument(
        "--results_dir", type=Path, default=Path("benchmarks/study"), help="the report and the runs' records"
    )
    parser.add_argument("--data_dir", type=Path, default=prepare_data.DATA_DIR, help="the prepared datasets")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, default=None, help="threads per run (default: cores / jobs)")
    parser.add_argument("--report", action="store_true", help="only write the report, from the recorded runs")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    tasks = [TASKS[name] for name in args.tasks or TASKS]
    output_dir, data_dir = args.output_dir.resolve(), args.data_dir.resolve()
    records_dir = args.results_dir / "runs"
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)

    if not args.report:
        for task in tasks:
            task.prepare(output_dir / task.name, data_dir)
        execute_all(tasks, output_dir, records_dir, data_dir, threads, args.jobs)

    # the report covers every task with recorded runs, not only those of this call; a task of the report whose runs
    # are not recorded (those run before records were kept beside the report) keeps its section as it is
    records = finished_runs(records_dir)
    started = {run.task for run in records}
    report = args.results_dir / "results.json"
    kept = json.loads(report.read_text())["tasks"] if report.exists() else {}
    results = {
        "tasks": {
            name: summarize(task, records) if name in started else kept[name]
            for name, task in TASKS.items()
            if name in started or name in kept
        }
    }
    lost = lost_comparisons(report, results)
    if lost:
        sys.exit(
            f"{args.results_dir / 'results.json'} has results that the runs recorded under {records_dir} do not: "
            f"{', '.join(lost)}. Nothing written. Run `python -m scripts.research.study "
            f"{' '.join(sorted({entry.split(' ')[0] for entry in lost}))} --results_dir {args.results_dir}` to "
            "produce them, or write this report elsewhere with --results_dir."
        )
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.results_dir / "results.md").write_text(markdown(results))
    plot(results, args.results_dir / "results.png")
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
