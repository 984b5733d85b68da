#!/usr/bin/env python
"""Which EA conv should EA-ViT use by default: raster order (the authors') or the 2-D patch grid? A small ViT trained
from scratch on Fashion-MNIST, vanilla vs EA-raster vs EA-grid, same data, seeds and budget; validation accuracy
(a split of the training set) and training time; with `--test`, also the accuracy on the 10,000 test images (for
settings chosen on validation only: `scripts.research.study` calls it so).

    .venv/bin/python -m scripts.research.vit_conv_study --seeds 0 1 2 --output vit_conv_study.json
    .venv/bin/python -m scripts.research.vit_conv_study --variants "EA grid" --seeds 3 --test --output run.json
    .venv/bin/python -m scripts.research.vit_conv_study --step_cost    # cost of a ViT-S/14 training step per variant

Reads Debian's `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`, `apt-get install dataset-fashion-mnist`)
or `--data_dir` with the same four idx files.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from ea_hf import EAViTConfig, EAViTForImageClassification
from scripts.data.prepare_data import read_idx


VARIANTS = {
    "vanilla": {"ea_encoder": False},
    "EA raster": {"ea_conv": "raster"},
    "EA grid": {"ea_conv": "grid"},
}


def load_split(data_dir: Path, train_size: int, validation_size: int):
    """A fixed, seeded train/validation split of Fashion-MNIST's training set: images [N, 1, 28, 28] in [-1, 1]."""
    images = read_idx(data_dir / "train-images-idx3-ubyte.gz")
    labels = read_idx(data_dir / "train-labels-idx1-ubyte.gz")
    order = np.random.default_rng(0).permutation(len(images))
    images = torch.from_numpy(images[order].copy()).float().div(127.5).sub(1.0).unsqueeze(1)
    labels = torch.from_numpy(labels[order].astype(np.int64))
    end = train_size + validation_size
    return (images[:train_size], labels[:train_size]), (images[train_size:end], labels[train_size:end])


def load_test(data_dir: Path):
    """Fashion-MNIST's 10,000 test images [N, 1, 28, 28] in [-1, 1] and labels [N]."""
    images = torch.from_numpy(read_idx(data_dir / "t10k-images-idx3-ubyte.gz").copy()).float()
    labels = torch.from_numpy(read_idx(data_dir / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    return images.div(127.5).sub(1.0).unsqueeze(1), labels


def accuracy(model, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        predictions = torch.cat([model(chunk).logits.argmax(-1) for chunk in images.split(500)])
    return (predictions == labels).float().mean().item()


def train_and_evaluate(overrides: dict, args, train, validation, seed: int, test=None) -> dict:
    torch.manual_seed(seed)
    config = EAViTConfig(
        image_size=28, patch_size=4, num_channels=1, hidden_size=96, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=192, num_labels=10, ea_alpha=args.ea_alpha, ea_beta=args.ea_beta, **overrides,
    )  # fmt: skip
    model = EAViTForImageClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.05)
    steps = args.epochs * (len(train[0]) // args.batch_size)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=steps // 10, num_training_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    with tqdm(total=steps, desc=f"seed {seed}", leave=False) as progress:
        for _ in range(args.epochs):
            order = torch.randperm(len(train[0]), generator=generator)
            for i in range(len(order) // args.batch_size):
                batch = order[i * args.batch_size : (i + 1) * args.batch_size]
                images = train[0][batch]
                flip = torch.rand(len(batch), generator=generator) < 0.5  # horizontal flips
                images = torch.where(flip[:, None, None, None], images.flip(-1), images)
                loss = model(images, labels=train[1][batch]).loss
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                progress.update()
                progress.set_postfix(loss=f"{loss.item():.3f}")
    seconds = time.perf_counter() - start
    results = {"accuracy": accuracy(model, *validation), "train_seconds": seconds}
    if test is not None:
        results["test_accuracy"] = accuracy(model, *test)
    return results


def measure_step_cost(repeats: int = 4) -> dict[str, float]:
    """Seconds of one training step (forward and backward) of a ViT-S/14 at 224 px, batch 4, per variant,
    interleaved; medians of `repeats` rounds after a warm-up round, with the ratio to vanilla."""
    config = dict(
        image_size=224, patch_size=14, hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
        intermediate_size=1536, num_labels=10,
    )  # fmt: skip
    models = {name: EAViTForImageClassification(EAViTConfig(**config, **o)) for name, o in VARIANTS.items()}
    images, labels = torch.randn(4, 3, 224, 224), torch.randint(0, 10, (4,))
    seconds = {name: [] for name in models}
    for _ in range(repeats + 1):
        for name, model in models.items():
            start = time.perf_counter()
            model(images, labels=labels).loss.backward()
            seconds[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values[1:]) for name, values in seconds.items()}
    for name, median in medians.items():
        print(f"  {name:<10} {median:.2f} s per training step, {median / medians['vanilla']:.2f}x vanilla")
    return medians


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--train_size", type=int, default=10000)
    parser.add_argument("--validation_size", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--ea_alpha", type=float, default=0.5)
    parser.add_argument("--ea_beta", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--test", action="store_true", help="also score the test set (chosen settings only)")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--step_cost", action="store_true", help="only time a ViT-S/14 training step per variant")
    args = parser.parse_args(argv)
    if args.step_cost:
        return measure_step_cost()

    train, validation = load_split(args.data_dir, args.train_size, args.validation_size)
    test = load_test(args.data_dir) if args.test else None
    results = {name: [] for name in args.variants}
    for seed in args.seeds:  # variants interleaved per seed, so that machine load spreads evenly
        for name in args.variants:
            results[name].append(train_and_evaluate(VARIANTS[name], args, train, validation, seed, test))
            print(f"seed {seed} {name}: {results[name][-1]}", flush=True)

    print(
        f"\nFashion-MNIST, {args.train_size} training / {args.validation_size} validation images, {args.epochs} "
        f"epochs, alpha {args.ea_alpha}, beta {args.ea_beta}, seeds {args.seeds}"
    )
    summary = {}
    for name, runs in results.items():
        accuracies = [run["accuracy"] for run in runs]
        summary[name] = {
            "accuracy_mean": statistics.mean(accuracies),
            "accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "train_seconds_mean": statistics.mean(run["train_seconds"] for run in runs),
            "runs": runs,
        }
        tested = f", test accuracy {statistics.mean(r['test_accuracy'] for r in runs):.4f}" if args.test else ""
        print(
            f"  {name:<10} validation accuracy {summary[name]['accuracy_mean']:.4f} +- "
            f"{summary[name]['accuracy_std']:.4f}{tested}, training {summary[name]['train_seconds_mean']:.0f} s"
        )
    if args.output:
        args.output.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **summary}, indent=2))
    return summary


if __name__ == "__main__":
    main()
