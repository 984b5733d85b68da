#!/usr/bin/env python
"""Convert a vanilla checkpoint (local folder or Hub id) into an EA checkpoint folder.

    python scripts/examples/convert_checkpoint.py google-bert/bert-base-uncased ea-bert-base \\
        --ea_alpha 0.1 --ea_beta 0.1
    python scripts/examples/convert_checkpoint.py google/vit-base-patch16-224 ea-vit-base --ea_conv grid

BERT, T5, Marian and ViT checkpoints are supported (ViT: the current and the older parameter names).

The output folder holds the weights (the EA convolutions newly initialised), a config with EA fields and an
`auto_map` for every head, the code files (so that it loads with `trust_remote_code=True` without ea_hf), and the
tokenizer when the source has one. A sentence-transformers folder (with a `modules.json`, e.g.
sentence-transformers/all-MiniLM-L6-v2) keeps its modules.json, sentence_bert_config.json,
config_sentence_transformers.json and module subfolders (1_Pooling, 2_Dense, ...), so that
`SentenceTransformer(output_dir, trust_remote_code=True)` loads the same pipeline around the EA model:

    python scripts/examples/convert_checkpoint.py sentence-transformers/all-MiniLM-L6-v2 ea-minilm --ea_alpha 0.1
"""

import argparse
import json
import math
import os

from safetensors import safe_open
from transformers.utils import logging

from ea_hf import convert_checkpoint


def summary(source: str, output_dir: str) -> str:
    """A few lines: what was converted, what is new (the EA convolutions), where it was saved."""
    with open(os.path.join(output_dir, "config.json"), encoding="utf-8") as file:
        config = json.load(file)
    ea = ", ".join(f"{key}={value}" for key, value in config.items() if key.startswith("ea_"))
    with safe_open(os.path.join(output_dir, "model.safetensors"), "pt") as weights:
        new = [key for key in weights.keys() if ".evolving_attention.conv." in key]
        parameters = sum(math.prod(weights.get_slice(key).get_shape()) for key in new)
    return "\n".join(
        [
            f"Converted {source} into {config['architectures'][0]} ({config['model_type']}: {ea}).",
            f"New: the EA convolutions, {len(new)} tensors ({parameters:,} parameters).",
            f"Saved to {output_dir}: {', '.join(sorted(os.listdir(output_dir)))}",
        ]
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="vanilla checkpoint: a local folder or a Hub model id")
    parser.add_argument("output_dir", help="new folder for the EA checkpoint")
    parser.add_argument("--ea_alpha", type=float, help="weight of the convolution branch (config default if unset)")
    parser.add_argument("--ea_beta", type=float, help="weight of the previous layer's map (config default if unset)")
    parser.add_argument("--ea_kernel_size", type=int, help="odd kernel size of the EA convolution")
    parser.add_argument("--ea_activation", choices=["relu", "leaky_relu", "gelu", "identity"])
    parser.add_argument("--ea_conv", choices=["raster", "grid"], help="ViT only: raster-order or 2-D grid conv")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k.startswith("ea_") and v is not None}
    logging.set_verbosity_error()  # transformers' logs print the config twice, and a load report: summary() says it
    logging.disable_progress_bar()
    try:
        output_dir = convert_checkpoint(args.source, args.output_dir, **overrides)
    except (FileNotFoundError, FileExistsError) as error:  # a mistyped source, a used output folder
        raise SystemExit(f"convert_checkpoint.py: error: {error}") from None
    print(summary(args.source, output_dir))


if __name__ == "__main__":
    main()
