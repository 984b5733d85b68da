#!/usr/bin/env python
"""Cached generation speed: EA vs vanilla, same architecture and weights, interleaved in one run.

    .venv/bin/python -m benchmarks.benchmark_generation --model marian         # opus-mt size: 6+6 layers, d_model 512
    .venv/bin/python -m benchmarks.benchmark_generation --model t5 --quick     # a CI-sized smoke run

For each variant it times `generate()` of `--new_tokens` tokens (greedy, a fixed number of tokens) from the same
source batch: vanilla with sdpa and with eager attention, EA with the cache, and EA without it (every step
recomputes the whole prefix). The variants run in turn, `--repeats` rounds, and the medians are reported with the
ratios last. Weights are random: speed does not depend on them, and the EA model is the vanilla one plus the convs.
"""

import argparse
import copy
import json
import statistics
import time

import torch
from transformers import AutoModelForSeq2SeqLM, MarianConfig, T5Config

import ea_hf


CONFIGS = {"marian": MarianConfig, "t5": T5Config}
SIZES = {  # opus-mt-en-de and t5-small
    "marian": dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                   decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, vocab_size=58101,
                   pad_token_id=58100, decoder_start_token_id=58100, eos_token_id=0, max_position_embeddings=512),
    "t5": dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8, vocab_size=32128,
               decoder_start_token_id=0, pad_token_id=0, eos_token_id=1),
}  # fmt: skip
QUICK = {
    "marian": dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                   decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=1000),
    "t5": dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4, vocab_size=1000),
}  # fmt: skip


def build_models(name: str, quick: bool) -> dict[str, torch.nn.Module]:
    fields = {**SIZES[name], **(QUICK[name] if quick else {})}
    if name == "marian":
        fields["pad_token_id"] = fields["decoder_start_token_id"] = fields["vocab_size"] - 1
    vanilla_config = CONFIGS[name](**fields)
    ea_class, vanilla_class = ea_hf.ea_model_classes(vanilla_config, AutoModelForSeq2SeqLM)
    torch.manual_seed(0)
    ea = ea_class(ea_class.config_class(**fields)).eval()
    vanilla_sdpa = vanilla_class(vanilla_config).eval()
    vanilla_sdpa.load_state_dict(ea.state_dict(), strict=False)
    vanilla_eager = vanilla_class(copy.deepcopy(vanilla_config)).eval()  # its own config: sdpa's stays sdpa
    vanilla_eager.load_state_dict(ea.state_dict(), strict=False)
    vanilla_eager.set_attn_implementation("eager")
    return {"vanilla sdpa": vanilla_sdpa, "vanilla eager": vanilla_eager, "EA cached": ea, "EA uncached": ea}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(SIZES), default="marian")
    parser.add_argument("--quick", action="store_true", help="tiny model, few tokens: a smoke run")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--source_length", type=int, default=32)
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.new_tokens, args.repeats = min(args.new_tokens, 16), min(args.repeats, 2)

    models = build_models(args.model, args.quick)
    torch.manual_seed(1)
    vocab_size = models["EA cached"].config.vocab_size
    source = torch.randint(2, vocab_size - 1, (args.batch_size, args.source_length))
    generation = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, num_beams=1)
    seconds = {name: [] for name in models}
    with torch.inference_mode():
        for name, model in models.items():  # warm-up
            model.generate(source, use_cache=name != "EA uncached", max_new_tokens=2)
        for round_index in range(args.repeats):
            for name, model in models.items():
                start = time.perf_counter()
                output = model.generate(source, use_cache=name != "EA uncached", **generation)
                seconds[name].append(time.perf_counter() - start)
                assert output.shape[1] == args.new_tokens + 1, (name, output.shape)
            print(
                f"round {round_index + 1}/{args.repeats}: "
                + ", ".join(f"{n} {s[-1]:.2f} s" for n, s in seconds.items())
            )

    tokens = args.batch_size * args.new_tokens
    results = {name: {"median_s": statistics.median(s)} for name, s in seconds.items()}
    for result in results.values():
        result["tokens_per_s"] = tokens / result["median_s"]
    speed = {name: result["tokens_per_s"] for name, result in results.items()}
    ratios = {
        "EA cached / vanilla eager (tokens/s)": speed["EA cached"] / speed["vanilla eager"],
        "EA cached / vanilla sdpa (tokens/s)": speed["EA cached"] / speed["vanilla sdpa"],
        "EA cached / EA uncached (tokens/s)": speed["EA cached"] / speed["EA uncached"],
    }
    print(
        f"\n{args.model}{' (quick)' if args.quick else ''}: batch {args.batch_size}, source {args.source_length} "
        f"tokens, {args.new_tokens} new tokens, median of {args.repeats}, {torch.get_num_threads()} threads"
    )
    for name, result in results.items():
        print(f"  {name:<14}{result['median_s']:>8.3f} s {result['tokens_per_s']:>9.1f} tokens/s")
    for name, ratio in ratios.items():
        print(f"  {name:<40}{ratio:>6.2f}")
    if args.output:
        with open(args.output, "w") as file:
            json.dump({"args": vars(args), "results": results, "ratios": ratios}, file, indent=2)
    return ratios


if __name__ == "__main__":
    main()
