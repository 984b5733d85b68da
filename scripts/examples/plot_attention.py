#!/usr/bin/env python
"""Draw a sentence's or an image's attention maps layer by layer, vanilla beside EA, as one PNG (issue 9).

    .venv/bin/python scripts/examples/plot_attention.py --ea_model checkpoints/ea-minilm-l6-rotten-tomatoes \\
        --vanilla_model checkpoints/runs/ea-minilm-l6-rotten-tomatoes/vanilla --text "a gorgeous , witty movie ." \\
        --layers 0 2 4 --output attention.png
    .venv/bin/python scripts/examples/plot_attention.py --ea_model EA_VIT --vanilla_model VIT --image cat.png \\
        --cls_to_grid

Both folders load with `AutoModel` (the EA one through `import ea_hf`, the vanilla one with
`attn_implementation="eager"`, the only attention that returns its probabilities) and their own tokenizer or image
processor. The figure has a row per model and a column per layer, each cell the first example's [L, L] attention
probabilities (queries down, keys across; the mean over heads or `--head N`) on one colour scale shared by the whole
figure; `--cls_to_grid` draws, for an image, the CLS token's attention to the patches on the patch grid instead.
Writes the PNG (`--output`, default `outputs/attention_maps.png`; an existing file only with `--overwrite`) and
prints its path. Grey and RGBA images are converted to RGB.
"""

import argparse
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

import ea_hf  # noqa: F401  (registers the EA models with AutoModel)
from ea_hf import check_model_source
from ea_hf.attention_maps import collect_attentions, plot_attention_maps


DEFAULT_OUTPUT = Path("outputs") / "attention_maps.png"  # outputs/ is git-ignored


def head_index(value: str) -> str | int:
    if value == "mean":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'mean' or a head index, got {value!r}") from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ea_model", type=Path, required=True, help="an EA checkpoint folder")
    parser.add_argument("--vanilla_model", type=Path, required=True, help="its vanilla twin's folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="a sentence (text models)")
    source.add_argument("--image", type=Path, help="an image file (image models)")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="layer indices (default: all)")
    parser.add_argument("--head", type=head_index, default="mean", help="'mean' over the heads, or a head index")
    parser.add_argument(
        "--cls_to_grid", action="store_true", help="images: the CLS token's attention on the patch grid"
    )
    parser.add_argument("--title", default=None, help="the figure's title")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"the PNG to write (default: {DEFAULT_OUTPUT})"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    args = parser.parse_args(argv)
    for name in ("ea_model", "vanilla_model"):
        folder = getattr(args, name)
        try:
            check_model_source(folder, what=f"--{name}")
        except FileNotFoundError as error:
            parser.error(f"not a model folder: {error}")
        if not (folder / "config.json").is_file():
            parser.error(f"--{name} {folder}: not a model folder (no config.json).")
    if args.image is not None and not args.image.is_file():
        parser.error(f"--image {args.image}: no such file.")
    if args.cls_to_grid and args.image is None:
        parser.error("--cls_to_grid is for images: pass --image.")
    if args.output.suffix.lower() != ".png":
        parser.error(f"--output {args.output}: expected a .png file.")
    if args.output.exists() and not args.overwrite:
        parser.error(f"--output {args.output} exists: pass --overwrite to replace it, or choose another --output.")
    return args


def load(folder: Path, ea: bool, text: str | None, image: Image.Image | None):
    """The model (eval mode), its inputs for `text` or `image`, and the token strings (None for an image)."""
    model = AutoModel.from_pretrained(folder, **({} if ea else {"attn_implementation": "eager"})).eval()
    if ea and not hasattr(model.config, "ea_alpha"):
        raise SystemExit(f"plot_attention.py: error: --ea_model {folder}: {type(model).__name__} is not an EA model.")
    if text is not None:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        inputs = tokenizer(text, return_tensors="pt", truncation=True)
        return model, inputs, tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
    return model, AutoImageProcessor.from_pretrained(folder)(image, return_tensors="pt"), None


def main(argv=None) -> Path:
    args = parse_args(argv)
    try:
        image = Image.open(args.image).convert("RGB") if args.image is not None else None
    except UnidentifiedImageError:
        raise SystemExit(f"plot_attention.py: error: --image {args.image}: not an image file.") from None
    maps, tokens = {}, {}
    for name, folder, ea in (("vanilla", args.vanilla_model, False), ("EA", args.ea_model, True)):
        model, inputs, tokens[name] = load(folder, ea, args.text, image)
        maps[name] = collect_attentions(model, inputs)
    labels = tokens["EA"] if tokens["EA"] == tokens["vanilla"] else None
    try:
        figure = plot_attention_maps(
            maps, labels=labels, layers=args.layers, head=args.head, title=args.title, cls_to_grid=args.cls_to_grid
        )
    except ValueError as error:  # a layer or head out of range, a non-square patch grid
        raise SystemExit(f"plot_attention.py: error: {error}") from None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=150)
    print(args.output)
    return args.output


if __name__ == "__main__":
    main()
