#!/usr/bin/env python
"""EA vs vanilla transformers, side by side: same architecture and weights, interleaved in one run (issue 8).

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.benchmark                  # the issue's cases on the CPU
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.benchmark --quick --threads 1    # a CI smoke run: seconds
    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.benchmark --cases bert-forward-b1-l512 --processes 5  # median
    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.benchmark --cases bert-forward-b1-l128 --compile --reference
    .venv/bin/python -m benchmarks.benchmark --cases bert-forward-b8-l128 --device cuda --dtype bfloat16

Every case runs three variants of one model: vanilla transformers with eager attention, vanilla with sdpa, and EA
(the vanilla weights plus the EA convs at their init). Before timing, `--check` (on by default) proves that they share
their weights: EA switched off (`ea_alpha = ea_beta = 0`, the EA model's weights) must give vanilla eager's logits,
and vanilla sdpa must give them to its rounding. Then the variants of a case run in turn, in an order that rotates
every round, `--warmup` rounds first; the medians of `--repeats` rounds are reported, with the ratios EA / vanilla
eager and EA / vanilla sdpa and the issue's targets last. A time ratio is the median over rounds of the ratio within
each round (the variants of a round run seconds apart), which a shared machine's slow spells disturb less than a
ratio of medians. Weights are random (`torch.manual_seed(0)`): speed does not
depend on them.

Cases: BERT-base (`BertConfig()`, a sequence-classification head) forward at batch x length 1 x 128, 8 x 128,
2 x 512 and 1 x 512 (one request); forward + backward with dropout on and no optimizer ("backward") at 4 x 128,
2 x 512 and 1 x 512; training step (forward, backward, AdamW step) at 8 x 128 and 2 x 512; ViT-base (`ViTConfig()`)
forward and training step at 8 x 224 x 224; opus-mt-size Marian greedy cached generation of 64 tokens from a 32-token
source (`benchmark_generation`'s models) and its training step on 8 pairs of 32 source and 64 target tokens.
`--reference` adds "EA reference" (the EA model with its steps' reference forward instead of the fused step, to
measure what the fusion buys), `--compile` adds `torch.compile` of vanilla eager and of EA, reported as EA compiled /
vanilla compiled (under compilation the EA steps run their reference forward, which inductor fuses itself).

Peak memory is measured on one more run of each variant after the timed ones: the tensor bytes live before it that
belong to the variant (weights, buffers, optimizer state, inputs; not the other variants' models) plus the highest
rise of allocated tensor bytes during the run ("step MiB"). On CUDA the rise is `torch.cuda.max_memory_allocated`
minus `memory_allocated` before; the CPU allocator keeps no such statistics, so there the rise is the peak of the
running sum of every allocation and free that torch's profiler records (`profile_memory=True`), in time order. Both
count tensor bytes exactly and the same way for every variant, unlike the process's RSS, whose high-water mark
(`ru_maxrss`) never falls after the warm-up and whose pages glibc keeps after frees; neither counts allocator
fragmentation or non-tensor memory.

`--quick` runs tiny models whose ratios say nothing about the targets: they are listed, not judged (no PASS or
FAIL), and the results go to `benchmarks/quick/` (git-ignored) unless `--output_dir` says otherwise.
"""

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
import transformers
from torch.profiler import ProfilerActivity, profile
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    BertConfig,
    LlamaConfig,
    ViTConfig,
)

import ea_hf
from benchmarks import benchmark_generation
from ea_hf import EvolvingAttentionStep


# kineto prints a line at every profiler start and stop (the CPU memory measurement), through the progress bar
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("vanilla eager", "vanilla sdpa", "EA")  # always run; `--reference` and `--compile` add others
REFERENCE_VARIANT = "EA reference"  # the EA model, its steps' reference forward (EvolvingAttentionStep.fused off)
COMPILED_VARIANTS = ("vanilla compiled", "EA compiled")  # torch.compile of vanilla eager and of EA
RATIOS = {  # the ratios reported, where both variants ran: name -> (variant, reference variant)
    "EA / vanilla eager": ("EA", "vanilla eager"),
    "EA / vanilla sdpa": ("EA", "vanilla sdpa"),
    "EA reference / vanilla eager": (REFERENCE_VARIANT, "vanilla eager"),
    "EA compiled / vanilla compiled": ("EA compiled", "vanilla compiled"),
}
SOURCE_LENGTH = 32  # Marian's source tokens, Llama's prompt tokens


@dataclass(frozen=True)
class Case:
    """One benchmark. `length`: tokens per sequence (bert, llama training), image side in pixels (vit), or new tokens
    (generation)."""

    family: str  # "bert", "vit", "marian" or "llama"
    task: str  # "forward", "backward" (forward + backward, dropout on), "train" (+ AdamW step) or "generate"
    batch_size: int
    length: int


CASES = {
    "bert-forward-b1-l128": Case("bert", "forward", 1, 128),
    "bert-forward-b8-l128": Case("bert", "forward", 8, 128),
    "bert-forward-b2-l512": Case("bert", "forward", 2, 512),
    "bert-forward-b1-l512": Case("bert", "forward", 1, 512),
    "bert-backward-b4-l128": Case("bert", "backward", 4, 128),
    "bert-backward-b2-l512": Case("bert", "backward", 2, 512),
    "bert-backward-b1-l512": Case("bert", "backward", 1, 512),
    "bert-train-b8-l128": Case("bert", "train", 8, 128),
    "bert-train-b2-l512": Case("bert", "train", 2, 512),
    "vit-forward-b8-224": Case("vit", "forward", 8, 224),
    "vit-train-b8-224": Case("vit", "train", 8, 224),
    "marian-generate-64": Case("marian", "generate", 1, 64),
    "marian-train-b8-l64": Case("marian", "train", 8, 64),
    "llama-generate-b1-64": Case("llama", "generate", 1, 64),
    "llama-generate-b8-64": Case("llama", "generate", 8, 64),
    "llama-train-b2-l512": Case("llama", "train", 2, 512),
}
QUICK_SHAPES = {  # `--quick`: (batch size, length) of each case, on tiny models
    "bert-forward-b1-l128": (1, 32),
    "bert-forward-b8-l128": (2, 32),
    "bert-forward-b2-l512": (1, 64),
    "bert-forward-b1-l512": (1, 64),
    "bert-backward-b4-l128": (2, 32),
    "bert-backward-b2-l512": (1, 64),
    "bert-backward-b1-l512": (1, 64),
    "bert-train-b8-l128": (2, 32),
    "bert-train-b2-l512": (1, 64),
    "vit-forward-b8-224": (2, 32),
    "vit-train-b8-224": (2, 32),
    "marian-generate-64": (1, 8),
    "marian-train-b8-l64": (2, 8),
    "llama-generate-b1-64": (1, 8),
    "llama-generate-b8-64": (2, 8),
    "llama-train-b2-l512": (1, 64),
}
# ~100M parameters (tied embeddings): TinyLlama's shape at half the width and depth
LLAMA_SIZE = dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=4, tie_word_embeddings=True, pad_token_id=0)  # fmt: skip
HOSTS = {  # family: its vanilla config class, the benchmark's size (else the config's defaults), the head's Auto class
    "bert": (BertConfig, {}, AutoModelForSequenceClassification),
    "vit": (ViTConfig, {}, AutoModelForImageClassification),
    "llama": (LlamaConfig, LLAMA_SIZE, AutoModelForCausalLM),
}
QUICK_SIZES = {  # Marian's come from benchmark_generation.QUICK
    "bert": dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
    "vit": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
                patch_size=8),
    "llama": dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2),
}  # fmt: skip
# EA / vanilla eager, BERT-base (issue 22; the peak memories at length 128 from issue 8): (case, metric, limit)
TARGETS = [
    ("bert-forward-b1-l128", "time", 1.10),
    ("bert-forward-b8-l128", "time", 1.10),
    ("bert-forward-b2-l512", "time", 1.10),
    ("bert-forward-b1-l512", "time", 1.10),
    ("bert-backward-b4-l128", "time", 1.15),
    ("bert-backward-b2-l512", "time", 1.30),
    ("bert-backward-b1-l512", "time", 1.30),
    ("bert-train-b8-l128", "time", 1.10),
    ("bert-train-b2-l512", "peak_memory", 1.15),
    ("bert-forward-b8-l128", "peak_memory", 1.15),
    ("bert-train-b8-l128", "peak_memory", 1.15),
    # issue 23: EA-Llama
    ("llama-generate-b1-64", "time", round(1 / 0.85, 3)),
    ("llama-generate-b8-64", "time", round(1 / 0.85, 3)),
    ("llama-train-b2-l512", "time", 1.30),
]
CHECK_ATOL = {"EA off": 1e-5, "vanilla sdpa": 1e-4}  # max |logits - vanilla eager's|


def load_shared_weights(model: torch.nn.Module, source: torch.nn.Module) -> torch.nn.Module:
    """Load `source`'s weights into `model`: only EA conv weights may be missing on either side."""
    missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
    others = [name for name in missing + unexpected if ".evolving_attention.conv." not in name]
    if others:
        raise RuntimeError(f"{type(model).__name__} and {type(source).__name__} differ beyond the EA convs: {others}")
    return model


def ea_twin(model: torch.nn.Module, ea_class: type, **ea_config) -> torch.nn.Module:
    """An `ea_class` model (in eval mode) from `model`'s config plus `ea_config`, with `model`'s weights."""
    config = ea_class.config_class(**{**model.config.to_dict(), **ea_config})
    return load_shared_weights(ea_class(config).eval(), model)


def build_models(family: str, quick: bool) -> dict[str, torch.nn.Module]:
    """The variants of a family, `VARIANTS` order, on the CPU in float32 and eval mode, with the same weights."""
    if family == "marian":
        built = benchmark_generation.build_models("marian", quick)
        models = {variant: built["EA cached" if variant == "EA" else variant] for variant in VARIANTS}
    else:
        config_class, size, auto_class = HOSTS[family]
        config = config_class(**{**size, **(QUICK_SIZES[family] if quick else {})})
        ea_class, vanilla_class = ea_hf.ea_model_classes(config, auto_class)
        torch.manual_seed(0)
        eager = vanilla_class(config).eval()
        eager.set_attn_implementation("eager")
        sdpa = copy.deepcopy(eager)  # its own config too: the attention implementation is a config field
        sdpa.set_attn_implementation("sdpa")
        models = {"vanilla eager": eager, "vanilla sdpa": sdpa, "EA": ea_twin(eager, ea_class)}
    implementations = {variant: model.config._attn_implementation for variant, model in models.items()}
    if implementations != {"vanilla eager": "eager", "vanilla sdpa": "sdpa", "EA": "eager"}:
        raise RuntimeError(f"{family}: the variants use attention implementations {implementations}.")
    return models


def check_inputs(family: str, config) -> dict[str, torch.Tensor]:
    """A small batch for `check_shared_weights`: 2 sequences of 16 tokens (Marian: 8 target tokens), or 2 images."""
    torch.manual_seed(2)
    if family == "vit":
        return {"pixel_values": torch.randn(2, config.num_channels, config.image_size, config.image_size)}
    tokens = torch.randint(2, config.vocab_size - 1, (2, 16))
    return {"input_ids": tokens, "decoder_input_ids": tokens[:, :8]} if family == "marian" else {"input_ids": tokens}


def check_shared_weights(models: dict[str, torch.nn.Module], family: str) -> dict[str, float]:
    """Raise unless EA switched off (`ea_alpha = ea_beta = 0`, with the EA model's weights) and vanilla sdpa give
    vanilla eager's logits, within `CHECK_ATOL`. Returns the max |difference| of each. Models in float32, eval mode."""
    ea = models["EA"]
    others = {"EA off": ea_twin(ea, type(ea), ea_alpha=0.0, ea_beta=0.0), "vanilla sdpa": models["vanilla sdpa"]}
    inputs = check_inputs(family, ea.config)
    with torch.inference_mode():
        expected = models["vanilla eager"](**inputs).logits
        differences = {name: (model(**inputs).logits - expected).abs().max().item() for name, model in others.items()}
    for name, difference in differences.items():
        if not difference <= CHECK_ATOL[name]:
            raise RuntimeError(
                f"{family}: {name} gives logits {difference:.2e} away from vanilla eager's (at most "
                f"{CHECK_ATOL[name]:.0e}): the variants do not share their weights."
            )
    return differences


def make_inputs(case: Case, config) -> dict[str, torch.Tensor]:
    """bert: `input_ids` and `attention_mask` [B, L] (no padding); vit: `pixel_values` [B, C, L, L]; marian:
    `input_ids` [B, SOURCE_LENGTH]; llama: prompts [B, SOURCE_LENGTH] to generate from, else [B, L]. To train (and
    backward), `labels`: [B] classes, or Marian's [B, L] tokens, or Llama's inputs."""
    torch.manual_seed(1)
    batch_size, length = case.batch_size, case.length
    learns = case.task in ("backward", "train")
    if case.family == "vit":
        inputs = {"pixel_values": torch.randn(batch_size, config.num_channels, length, length)}
    elif case.family == "llama":
        tokens = torch.randint(1, config.vocab_size, (batch_size, length if learns else SOURCE_LENGTH))
        inputs = {"input_ids": tokens, "attention_mask": torch.ones_like(tokens)}
        return {**inputs, "labels": tokens} if learns else inputs
    elif case.family == "marian":
        inputs = {"input_ids": torch.randint(2, config.vocab_size - 1, (batch_size, SOURCE_LENGTH))}
        if learns:
            inputs["labels"] = torch.randint(2, config.vocab_size - 1, (batch_size, length))
        return inputs
    else:
        inputs = {
            "input_ids": torch.randint(1, config.vocab_size, (batch_size, length)),
            "attention_mask": torch.ones(batch_size, length, dtype=torch.long),
        }
    if learns:
        inputs["labels"] = torch.randint(0, config.num_labels, (batch_size,))
    return inputs


def make_step(case: Case, model: torch.nn.Module, inputs: dict) -> tuple[Callable[[], None], Callable[[], list]]:
    """A callable that runs the case once on `model`, and one that lists the tensors the step keeps between runs
    beyond the model's own (the optimizer state, which exists after the first run)."""
    if case.task == "backward":
        model.train()

        def step():
            model(**inputs).loss.backward()
            model.zero_grad(set_to_none=True)

        return step, lambda: []
    if case.task == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step():
            model(**inputs).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def kept():
            return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]

        return step, kept
    model.eval()
    if case.task == "forward":

        @torch.inference_mode()
        def step():
            model(**inputs)

    else:
        generation = dict(max_new_tokens=case.length, min_new_tokens=case.length, do_sample=False, num_beams=1)
        before = inputs["input_ids"].shape[1] if case.family == "llama" else 1  # the prompt, or the decoder start

        @torch.inference_mode()
        def step():
            output = model.generate(**inputs, **generation)
            if output.shape[1] != case.length + before:
                raise RuntimeError(f"generate() returned {output.shape[1] - before} tokens, not {case.length}.")

    return step, lambda: []


def with_reference_step(step: Callable[[], None]) -> Callable[[], None]:
    """`step` with every EA step running its reference forward (`EvolvingAttentionStep.fused` off)."""

    def reference_step():
        fused, EvolvingAttentionStep.fused = EvolvingAttentionStep.fused, False
        try:
            step()
        finally:
            EvolvingAttentionStep.fused = fused

    return reference_step


def add_variants(models: dict[str, torch.nn.Module], args) -> dict[str, torch.nn.Module]:
    """`models` plus `--reference`'s EA model (the same module, its steps' reference forward) and `--compile`'s
    `torch.compile` of vanilla eager and of EA (fresh wrappers with dynamo's caches reset: one case's shapes each)."""
    models = dict(models)
    if args.reference:
        models[REFERENCE_VARIANT] = models["EA"]
    if args.compile:
        torch._dynamo.reset()
        models["vanilla compiled"] = torch.compile(models["vanilla eager"], dynamic=False)
        models["EA compiled"] = torch.compile(models["EA"], dynamic=False)
    return models


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rise(step: Callable[[], None], device: torch.device) -> int:
    """The highest rise of allocated tensor bytes on `device` during `step()` above what was allocated before it."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        step()
    events = [event for event in profiler.profiler.kineto_results.events() if event.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda event: event.start_ns()):  # stable: same-time events keep their order
        if event.device_type() == torch.autograd.DeviceType.CPU:
            live += event.nbytes()
            peak = max(peak, live)
    return peak


def tensor_bytes(tensors) -> int:
    """The bytes of the distinct storages behind `tensors` (tied weights count once)."""
    storages = {(t.device, t.untyped_storage().data_ptr()): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def run_case(case: Case, models: dict, args, device: torch.device, progress: tqdm) -> dict:
    """Time the variants interleaved, measure their peak memory, and return the case's results."""
    dtype = getattr(torch, args.dtype)
    inputs = make_inputs(case, models["EA"].config)
    inputs = {k: v.to(device, dtype if v.is_floating_point() else None) for k, v in inputs.items()}
    models = add_variants(models, args)
    variants = list(models)
    steps = {variant: make_step(case, models[variant], inputs) for variant in variants}
    if REFERENCE_VARIANT in steps:
        steps[REFERENCE_VARIANT] = (with_reference_step(steps[REFERENCE_VARIANT][0]), steps[REFERENCE_VARIANT][1])
    seconds = {variant: [] for variant in variants}
    for round_index in range(-args.warmup, args.repeats):  # warm-up rounds are negative (and compile)
        shift = round_index % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            synchronize(device)
            start = time.perf_counter()
            steps[variant][0]()
            synchronize(device)
            if round_index >= 0:
                seconds[variant].append(time.perf_counter() - start)
            progress.update()
    results = {}
    for variant in variants:
        step, kept = steps[variant]
        model = models[variant]
        resident = tensor_bytes([*model.parameters(), *model.buffers(), *inputs.values(), *kept()])
        rise = peak_rise(step, device)
        median = statistics.median(seconds[variant])
        results[variant] = {
            "seconds": seconds[variant],
            "median_s": median,
            "peak_bytes": resident + rise,
            "step_bytes": rise,
        }
        progress.update()
    del steps, models
    gc.collect()
    ratios = {
        name: {
            "time": time_ratio(seconds[variant], seconds[reference]),
            "peak_memory": results[variant]["peak_bytes"] / results[reference]["peak_bytes"],
        }
        for name, (variant, reference) in RATIOS.items()
        if variant in results and reference in results
    }
    return {**asdict(case), "variants": results, "ratios": ratios}


def time_ratio(seconds: list[float], reference: list[float]) -> float:
    """The median over rounds of `seconds / reference` within each round."""
    return statistics.median(a / b for a, b in zip(seconds, reference))


def evaluate_targets(cases: dict, judge: bool = True) -> list[dict]:
    """The issue's targets among the cases run: EA / vanilla eager against the limit, the other ratios measured
    (sdpa, and the reference step's and the compiled models' where they ran) beside it. `judge=False` (`--quick`:
    tiny models, whose ratios say nothing about the targets): "pass" is None."""
    targets = []
    for name, metric, limit in TARGETS:
        if name in cases:
            ratios = cases[name]["ratios"]
            ratio = ratios["EA / vanilla eager"][metric]
            target = {"case": name, "metric": metric, "limit": limit}
            target.update({reference: values[metric] for reference, values in ratios.items()})
            targets.append({**target, "pass": ratio <= limit if judge else None})
    return targets


def cpu_info() -> tuple[str, list[str]]:
    """The CPU's model name and the vector extensions that decide oneDNN's kernels (AVX2, AVX-512, AMX, VNNI), from
    /proc/cpuinfo (elsewhere: `platform`'s name and no extensions)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    extensions = sorted(flag for flag in flags if flag.startswith(("avx2", "avx512", "amx", "avx_vnni")))
    return fields.get("model name") or platform.processor() or platform.machine(), extensions


def cpu_description(env: dict) -> str:
    """`model (extensions)` for the reports."""
    return f"{env['cpu']} ({' '.join(env['cpu_vector_extensions']) or 'no AVX2'})"


def git_commit() -> str | None:
    """HEAD's hash, with " (modified)" when the working tree differs from it; None outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + (" (modified)" if status.stdout.strip() else "")


def environment(device: torch.device) -> dict:
    cpu, extensions = cpu_info()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "ea_hf": ea_hf.__version__,
        "cpu": cpu,
        "cpu_vector_extensions": extensions,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        # the allocator's settings change how often large tensors cost fresh pages (benchmarks/NOTES.md)
        "allocator_env": {
            k: v
            for k, v in os.environ.items()
            if k.startswith("MALLOC_") or k in ("LD_PRELOAD", "THP_MEM_ALLOC_ENABLE")
        },
    }


def markdown_table(cases: dict) -> list[str]:
    """One row per case and variant: median ms and peak MiB, each also as a ratio to vanilla eager and sdpa (times:
    `time_ratio`)."""
    lines = [
        "| case | variant | median ms | ms / eager | ms / sdpa | peak MiB | peak / eager | peak / sdpa | step MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, case in cases.items():
        variants = case["variants"]
        eager, sdpa = variants["vanilla eager"], variants["vanilla sdpa"]
        for variant, result in variants.items():
            lines.append(
                f"| {name} | {variant} | {1000 * result['median_s']:.2f} | "
                f"{time_ratio(result['seconds'], eager['seconds']):.3f} | "
                f"{time_ratio(result['seconds'], sdpa['seconds']):.3f} | "
                f"{result['peak_bytes'] / 2**20:.1f} | {result['peak_bytes'] / eager['peak_bytes']:.3f} | "
                f"{result['peak_bytes'] / sdpa['peak_bytes']:.3f} | {result['step_bytes'] / 2**20:.1f} |"
            )
    return lines


def verdict(target: dict) -> str:
    return {True: "PASS", False: "FAIL", None: "not judged (--quick)"}[target["pass"]]


def summary_lines(cases: dict, targets: list[dict]) -> list[str]:
    """The EA ratios of every case, then the targets with PASS/FAIL (not judged with `--quick`)."""
    lines = []
    for name, case in cases.items():
        ratios = "; ".join(
            f"{reference}: time {values['time']:.3f}, peak memory {values['peak_memory']:.3f}"
            for reference, values in case["ratios"].items()
        )
        lines.append(f"- {name}: {ratios}")
    lines += ["", "Targets (EA / vanilla eager; issue 22: BERT-base, issue 23: EA-Llama):", ""]
    for target in targets:
        beside = ", ".join(f"{r} {target[r]:.3f}" for r in RATIOS if r in target and r != "EA / vanilla eager")
        lines.append(
            f"- {target['case']} {target['metric'].replace('_', ' ')}: {target['EA / vanilla eager']:.3f} <= "
            f"{target['limit']:.2f} {verdict(target)} ({beside})"
        )
    return lines


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="default: all")
    parser.add_argument("--quick", action="store_true", help="tiny models and inputs, 2 rounds: a smoke run")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 7; 2 with --quick)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, help="torch's intra-op threads (default: torch's own)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="first check that the variants share their weights (EA off gives vanilla eager's logits)",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="also run EA with its EA steps' reference forward (the unfused step), as the variant 'EA reference'",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also run torch.compile of vanilla eager and of EA (compiled in the warm-up rounds; give --warmup 1+)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="run the benchmark in N fresh processes in turn and report each ratio's median and range over them",
    )
    parser.add_argument(
        "--output_dir",
        help="where results.json and results.md go (default benchmarks/; benchmarks/quick/ with --quick)",
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 7
    if args.output_dir is None:
        args.output_dir = "benchmarks/quick" if args.quick else "benchmarks"
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}.")
    if args.processes < 1:
        parser.error(f"--processes must be at least 1, got {args.processes}.")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, got {args.warmup}.")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}.")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available to torch.")
    args.cases = [name for name in CASES if name in args.cases]
    return args


def run_processes(args) -> dict:
    """`--processes N`: the benchmark in N fresh processes, one after the other (the allocator's behaviour, and so the
    ratios, are decided per process); every ratio is reported as its median and range over the processes, and the
    targets are judged on the medians. Returns what results.json holds: each process's own results under
    "processes"."""
    child = ["--cases", *args.cases, "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--device",
             args.device, "--dtype", args.dtype, "--check" if args.check else "--no-check"]  # fmt: skip
    child += (["--quick"] if args.quick else []) + (["--threads", str(args.threads)] if args.threads else [])
    child += (["--reference"] if args.reference else []) + (["--compile"] if args.compile else [])
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in tqdm(range(args.processes), desc="processes", file=sys.stderr):
            folder = os.path.join(tmp, str(index))
            command = [sys.executable, "-m", "benchmarks.benchmark", *child, "--output_dir", folder]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
            with open(os.path.join(folder, "results.json")) as file:
                runs.append(json.load(file))
    cases, medians = {}, {}
    for name in runs[0]["cases"]:
        cases[name] = {"ratios": {}}
        medians[name] = {"ratios": {}}
        for reference in runs[0]["cases"][name]["ratios"]:
            spread = {}
            for metric in ("time", "peak_memory"):
                values = [run["cases"][name]["ratios"][reference][metric] for run in runs]
                spread[metric] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                                  "values": values}  # fmt: skip
            cases[name]["ratios"][reference] = spread
            medians[name]["ratios"][reference] = {metric: value["median"] for metric, value in spread.items()}
    targets = evaluate_targets(medians, judge=not args.quick)
    output = {"environment": runs[0]["environment"], "args": vars(args), "cases": cases, "targets": targets,
              "processes": runs}  # fmt: skip
    env = output["environment"]
    header = (
        f"{env['date']}, {cpu_description(env)}, {env['threads']} threads, torch {env['torch']}, {args.dtype}, "
        f"median (min-max) over {args.processes} fresh processes of "
        f"the median of {args.repeats} rounds each, commit {env['git_commit']}"
        + (" -- QUICK: tiny models and inputs, the targets do not apply" if args.quick else "")
    )
    references = list(next(iter(cases.values()))["ratios"])
    table = ["| case | " + " | ".join(f"{r}: time | peak memory" for r in references) + " |",
             "|---|" + "---:|---:|" * len(references)]  # fmt: skip
    for name, case in cases.items():
        cells = [
            f"{value['median']:.3f} ({value['min']:.3f}-{value['max']:.3f})"
            for reference in references
            for value in case["ratios"][reference].values()
        ]
        table.append(f"| {name} | {' | '.join(cells)} |")
    summary = ["Targets (the median EA / vanilla eager; issue 22: BERT-base, issue 23: EA-Llama):", ""] + [
        f"- {t['case']} {t['metric'].replace('_', ' ')}: {t['EA / vanilla eager']:.3f} <= {t['limit']:.2f} "
        + verdict(t)
        for t in targets
    ]
    write_results(args.output_dir, output, header, table, summary)
    return output


def write_results(output_dir: str, output: dict, header: str, table: list[str], summary: list[str]) -> None:
    """Print the report and write results.json and results.md into `output_dir`."""
    print("\n" + header + "\n\n" + "\n".join(table) + "\n\n" + "\n".join(summary))
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "results.json"), "w") as file:
        json.dump(output, file, indent=2)
    with open(os.path.join(output_dir, "results.md"), "w") as file:
        title = "# EA vs vanilla transformers (benchmarks/benchmark.py)"
        file.write("\n".join([title, "", header, "", *table, "", *summary]) + "\n")


def main(argv=None) -> dict:
    """Run the benchmark; returns what results.json holds."""
    args = parse_args(argv)
    if args.processes > 1:
        return run_processes(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    cases = {name: CASES[name] for name in args.cases}
    if args.quick:
        cases = {
            name: replace(case, batch_size=QUICK_SHAPES[name][0], length=QUICK_SHAPES[name][1])
            for name, case in cases.items()
        }
    results, checks, models, family = {}, {}, None, None
    variants = len(VARIANTS) + args.reference + 2 * args.compile
    total = len(cases) * variants * (args.warmup + args.repeats + 1)
    with tqdm(total=total, desc="benchmark", file=sys.stderr) as progress:
        for name, case in cases.items():  # CASES keeps a family's cases together: each family is built once
            if case.family != family:
                models = family = None
                gc.collect()
                progress.set_description(f"building {case.family}")
                models = build_models(case.family, args.quick)
                if args.check:
                    checks[case.family] = check_shared_weights(models, case.family)
                models = {variant: model.to(device, dtype) for variant, model in models.items()}
                family = case.family
            progress.set_description(name)
            results[name] = run_case(case, models, args, device, progress)
    targets = evaluate_targets(results, judge=not args.quick)
    output = {
        "environment": environment(device),
        "args": vars(args),
        "checks": checks,
        "cases": results,
        "targets": targets,
    }

    env = output["environment"]
    header = (
        f"{env['date']}, {env['device'] if device.type == 'cuda' else cpu_description(env)}, "
        f"{env['threads']} threads, "
        f"torch {env['torch']}, transformers {env['transformers']}, {args.dtype}, median of {args.repeats} rounds "
        f"after {args.warmup} warm-up round(s), commit {env['git_commit']}"
        + "".join(f", {k}={v}" for k, v in env["allocator_env"].items())
        + (
            " -- QUICK: tiny models and inputs (shapes in results.json), the targets do not apply"
            if args.quick
            else ""
        )
    )
    write_results(args.output_dir, output, header, markdown_table(results), summary_lines(results, targets))
    return output


if __name__ == "__main__":
    main()
