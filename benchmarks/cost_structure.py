#!/usr/bin/env python
"""Where EA is cheap and where it cannot be: each model's multiply-adds, counted, and its EA / no-EA forward time.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.cost_structure    # writes benchmarks/cost_structure.md

EA's conv costs k^2 H^2 multiply-adds per element of a [B, H, L, L] map (9 H^2 = 1,296 for BERT-base's 12 heads);
attention itself costs 2 d_head per element (its logits and its weighted sum of values). So the conv is
4.5 H / d_head times attention's own work: under 1 for BERT-base (d_head 64) but 36 for the EA-DC-Transformer, whose
8 heads are one channel wide. What the conv adds to a whole model then depends on how much of the model is attention:
little in BERT-base, whose dense layers cost 12 d^2 per token, and most in the small time-series models.

For each model the script counts multiply-adds with `torch.utils.flop_counter.FlopCounterMode` (matmuls and convs:
the same ops that decide CPU time) in one forward with EA (alpha = beta = 0.5; the EA-DC-Transformer its defaults)
and with EA off, and times both forwards (inference, interleaved, median of the paired ratios over `--rounds`).
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, ViTConfig

from benchmarks.benchmark import ea_twin
from ea_hf import (
    EABertConfig,
    EABertForSequenceClassification,
    EADCTransformerConfig,
    EADCTransformerForTimeSeriesClassification,
    EAViTConfig,
    EAViTForImageClassification,
)


ROOT = Path(__file__).resolve().parents[1]


def bert(length: int):
    config = EABertConfig(**{**BertConfig().to_dict(), "ea_alpha": 0.5, "ea_beta": 0.5})
    inputs = {"input_ids": torch.randint(1, config.vocab_size, (1, length))}
    return EABertForSequenceClassification(config), inputs, config.num_attention_heads, 64


def vit(size: int):
    config = EAViTConfig(**{**ViTConfig().to_dict(), "ea_alpha": 0.5, "ea_beta": 0.5})
    inputs = {"pixel_values": torch.randn(1, 3, size, size)}
    return EAViTForImageClassification(config), inputs, config.num_attention_heads, 64


def dc_transformer(length: int, channels: int):
    config = EADCTransformerConfig(num_channels=channels, context_length=length, num_labels=4)
    inputs = {"past_values": torch.randn(1, length, channels)}
    key_width = int(config.d_model * config.attention_key_fraction) // config.num_attention_heads
    return EADCTransformerForTimeSeriesClassification(config), inputs, config.num_attention_heads, key_width


# name: (what the table calls it, builder, its arguments)
MODELS = {
    "bert-128": ("BERT-base, 128 tokens", bert, (128,)),
    "bert-512": ("BERT-base, 512 tokens", bert, (512,)),
    "vit-224": ("ViT-base, 224 px (197 tokens)", vit, (224,)),
    "dc-japanesevowels": ("EA-DC-Transformer, JapaneseVowels (29 steps, 12 channels)", dc_transformer, (29, 12)),
    "dc-basicmotions": ("EA-DC-Transformer, BasicMotions (100 steps, 6 channels)", dc_transformer, (100, 6)),
    "dc-512": ("EA-DC-Transformer, 512 steps, 1 channel", dc_transformer, (512, 1)),
}


def multiply_adds(model, inputs) -> int:
    """Of one forward after a first one (which times the CPU kernels of each map shape once)."""
    with torch.inference_mode():
        model(**inputs)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(**inputs)
    return counter.get_total_flops() // 2


def time_ratio(ea, off, inputs, rounds: int) -> float:
    """Median over rounds of EA's forward time / EA off's, the two interleaved."""
    ratios = []
    with torch.inference_mode():
        for round_index in range(rounds + 1):
            seconds = []
            for model in (ea, off):
                start = time.perf_counter()
                model(**inputs)
                seconds.append(time.perf_counter() - start)
            if round_index:  # the first round warms up (and tunes the CPU kernels)
                ratios.append(seconds[0] / seconds[1])
    return statistics.median(ratios)


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "cost_structure.md"))
    args = parser.parse_args(argv)
    rows = [
        "| model | heads H, key width per head | conv / attention core | EA multiply-adds / model's (EA off) "
        "| EA / EA-off forward time |",
        "|---|---|---:|---:|---:|",
    ]
    for name in args.models:
        label, build, arguments = MODELS[name]
        torch.manual_seed(0)
        ea, inputs, heads, head_width = build(*arguments)
        ea, off = ea.eval(), ea_twin(ea, type(ea), ea_alpha=0.0, ea_beta=0.0)  # the same weights, EA off
        with_ea, without = multiply_adds(ea, inputs), multiply_adds(off, inputs)
        ratio = time_ratio(ea, off, inputs, args.rounds)
        rows.append(
            f"| {label} | {heads}, {head_width} | {4.5 * heads / head_width:.2f} | {with_ea / without:.3f} "
            f"| {ratio:.3f} |"
        )
        print(rows[-1], flush=True)
    header = [
        "# Where EA's conv costs: multiply-adds and forward time (benchmarks/cost_structure.py)",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, float32, median of {args.rounds} "
        "paired rounds. Conv / attention core = 9 H^2 / (2 d_head) = 4.5 H / d_head per map element.",
        "",
    ]
    Path(args.output).write_text("\n".join(header + rows) + "\n")
    return rows


if __name__ == "__main__":
    main()
