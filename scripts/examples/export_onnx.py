#!/usr/bin/env python
"""Export a saved EA model folder to ONNX, checked in onnxruntime against PyTorch before anything is written.

    python scripts/examples/export_onnx.py ea-minilm-l6-rotten-tomatoes ea-minilm-l6-rotten-tomatoes.onnx
    python scripts/examples/export_onnx.py ea-opus-mt-en-de ea-opus-mt-en-de.onnx --opset 17 --atol 1e-4
    python scripts/examples/export_onnx.py ea-minilm ea-minilm.onnx --quantize   # also writes ea-minilm.int8.onnx

FOLDER is loaded with the class its config's `architectures` names (else the family's base model), in float32 and
eval mode, and exported with the TorchScript exporter (`torch.onnx.export(dynamo=False)`) from one unpadded example
of batch 1 built from the config (random token ids in the vocabulary, a random image or series), with dynamic batch
and sequence axes. The graph takes (-> the model's first output, the only one exported):

    BERT            input_ids, attention_mask, token_type_ids   -> logits (EABertModel: last_hidden_state;
                                                                   multiple choice: [batch, choices, sequence] inputs;
                                                                   question answering: start_logits only)
    T5, Marian      input_ids, attention_mask, decoder_input_ids, decoder_attention_mask -> logits (no cache)
    T5 encoder      input_ids, attention_mask                   -> last_hidden_state
    ViT             pixel_values (dynamic batch only)           -> logits
    DC-Transformer  past_values, attention_mask                 -> logits

The graph is then run in onnxruntime on a padded batch of another shape (3 examples of different lengths, padded at
the end) and compared with PyTorch at the real positions: it is moved to OUTPUT only if the max difference is within
--atol, else the script exits with an error naming it and writes nothing. OUTPUT is a file; an existing one is never
overwritten, and nothing else is copied (tokenizer or image processor: load them from FOLDER). --quantize also writes
a dynamic int8 version beside it, OUTPUT with suffix `.int8.onnx`: onnxruntime `quantize_dynamic`, QInt8 weights per
output channel (--per_tensor: one scale per tensor) for the MatMul and Gather ops (linear layers, embeddings); the
Conv ops (EA convolutions, ViT's patch embedding) stay in float: ConvInteger on the attention maps is slower than the
float Conv and no more accurate. It reports the int8 model's max error against PyTorch on the check batch (not bounded
by --atol) and the argmax agreement of logits, or the min cosine similarity of hidden states (last axis, real
positions). On all-MiniLM-L6-v2 converted to EA: 4x smaller, cosine similarity 0.99 per channel, 0.96 per tensor
(benchmarks/onnx_int8.md).

Not optimum: its ONNX exporter (optimum-onnx) requires transformers < 4.58 and cannot serve transformers 5.
"""

import argparse
import inspect
import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from transformers import AutoConfig

from ea_hf import (
    EABertConfig,
    EABertForMultipleChoice,
    EADCTransformerConfig,
    EAMarianConfig,
    EAT5Config,
    EAViTConfig,
    check_model_source,
    ea_model_classes,
)


PROG = "export_onnx.py"
# source lengths and target lengths of the example (batch 1, unpadded) and of the padded check batch
EXAMPLE_LENGTHS, CHECK_LENGTHS = ([8], [5]), ([11, 5, 8], [4, 7, 6])
QUANTIZED_OPS = ["MatMul", "Gather"]  # --quantize: linear layers and embeddings; Conv stays in float


def fail(message: str):
    raise SystemExit(f"{PROG}: error: {message}")


def load_model(folder: Path) -> torch.nn.Module:
    """The EA model in `folder` with the head its config names (`ea_hf.ea_model_classes`), float32, eval mode."""
    try:
        check_model_source(folder, what="folder")  # names what the nearest existing parent holds
    except FileNotFoundError as error:
        fail(str(error))
    if not folder.is_dir():
        fail(f"{folder}: not a folder.")
    if not (folder / "config.json").is_file():
        fail(f"{folder}: not a saved model folder (no config.json).")
    saved = json.loads((folder / "config.json").read_text())
    model_type, architectures = saved.get("model_type"), saved.get("architectures") or []
    try:
        model_class = ea_model_classes(AutoConfig.from_pretrained(folder)).ea
    except ValueError:  # a model type transformers does not know, or one without an EA twin
        model_class = None
    if model_class is None or model_class.config_class.model_type != model_type:
        fail(
            f"{folder} is not an EA model: its config.json has model_type {model_type!r} (architectures "
            f"{architectures}); convert it first: scripts/examples/convert_checkpoint.py."
        )
    if model_class.__name__ not in architectures:
        print(f"architectures {architectures} names no EA class of {model_type}: exporting {model_class.__name__}")
    return model_class.from_pretrained(folder, dtype=torch.float32).eval()


def input_layout(model) -> tuple[list[str], dict[str, dict[int, str]], str | None]:
    """The graph's input names, their dynamic axes, and the input whose zeros mark the output's padded positions."""
    config, parameters = model.config, inspect.signature(model.forward).parameters
    if isinstance(config, EABertConfig):
        names = ["input_ids", "attention_mask", "token_type_ids"]
        axes = {0: "batch", 1: "choices", 2: "sequence"} if isinstance(model, EABertForMultipleChoice) else None
        return names, {name: axes or {0: "batch", 1: "sequence"} for name in names}, "attention_mask"
    if isinstance(config, (EAT5Config, EAMarianConfig)):
        if "decoder_input_ids" not in parameters:  # EAT5EncoderModel
            names = ["input_ids", "attention_mask"]
            return names, {name: {0: "batch", 1: "sequence"} for name in names}, "attention_mask"
        names = ["input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask"]
        axes = {name: {0: "batch", 1: "target" if name.startswith("decoder") else "sequence"} for name in names}
        return names, axes, "decoder_attention_mask"
    if isinstance(config, EAViTConfig):
        return ["pixel_values"], {"pixel_values": {0: "batch"}}, None
    if isinstance(config, EADCTransformerConfig):
        names = ["past_values", "attention_mask"]
        return names, {name: {0: "batch", 1: "sequence"} for name in names}, "attention_mask"
    raise TypeError(f"no ONNX input layout for {type(config).__name__}")


def make_batch(model, names, lengths, target_lengths, seed=0) -> dict[str, torch.Tensor]:
    """Inputs whose i-th example has lengths[i] real positions (target_lengths[i] on the decoder side), padded at the
    end to the longest; random ids in the vocabulary, random images or series. Multiple choice: the batch of
    len(lengths) questions has len(lengths) + 1 choices, each as long as its question."""
    config, generator = model.config, torch.Generator().manual_seed(seed)
    max_length = getattr(config, "max_position_embeddings", None) or getattr(config, "context_length", None) or 1024
    if isinstance(config, EAViTConfig):
        size = config.image_size if isinstance(config.image_size, (tuple, list)) else (config.image_size,) * 2
        return {"pixel_values": torch.randn(len(lengths), config.num_channels, *size, generator=generator)}

    def padded(lengths, extra_axes=()):
        lengths = torch.tensor(lengths).clamp(1, max_length)
        mask = torch.arange(int(lengths.max())) < lengths.view(-1, *[1] * (len(extra_axes) + 1))
        return mask.long().expand(len(lengths), *extra_axes, int(lengths.max())).contiguous()

    if isinstance(config, EADCTransformerConfig):
        mask = padded(lengths)
        values = torch.randn(*mask.shape, config.num_channels, generator=generator) * mask[..., None]
        return {"past_values": values, "attention_mask": mask}
    extra = (len(lengths) + 1,) if isinstance(model, EABertForMultipleChoice) else ()
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    batch = {}
    for prefix, these in [("", lengths), ("decoder_", target_lengths)]:
        if f"{prefix}input_ids" in names:
            mask = padded(these, extra)
            ids = torch.randint(0, config.vocab_size, mask.shape, generator=generator)
            batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"] = ids.masked_fill(mask == 0, pad), mask
    if "token_type_ids" in names:
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    return batch


class FirstOutput(torch.nn.Module):
    """`model(**dict(zip(names, inputs)))[0]` without cache: the positional tensors-in, tensor-out form to trace."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, names
        self.train(model.training)  # the exporter restores the wrapper's mode to the model when it is done
        self.kwargs = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}

    def forward(self, *inputs):
        return self.model(**dict(zip(self.names, inputs)), **self.kwargs, return_dict=False)[0]


def pytorch_output(wrapper: FirstOutput, inputs: tuple) -> torch.Tensor:
    """The reference the ONNX graph is checked against."""
    with torch.no_grad():
        return wrapper(*inputs)


def at_real_positions(output: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """An output with the mask's leading axes, at the positions where the mask is 1; other outputs in full."""
    if mask is not None and tuple(output.shape[: mask.dim()]) == tuple(mask.shape):
        return output[mask.bool()]
    return output


def run_onnx(path: Path, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {name: tensor.numpy() for name, tensor in batch.items()})
    return torch.from_numpy(np.asarray(output))


def max_difference(got: torch.Tensor, expected: torch.Tensor, mask) -> float:
    if got.shape != expected.shape:
        fail(f"the ONNX output has shape {tuple(got.shape)}, PyTorch's {tuple(expected.shape)}.")
    return (at_real_positions(got, mask) - at_real_positions(expected, mask)).abs().max().item()


def argmax_agreement(got: torch.Tensor, expected: torch.Tensor, mask) -> float:
    """The fraction of (real) rows of the output whose argmax over the last axis agrees."""
    agree = at_real_positions(got.argmax(-1), mask) == at_real_positions(expected.argmax(-1), mask)
    return agree.float().mean().item()


def min_cosine(got: torch.Tensor, expected: torch.Tensor, mask) -> float:
    """The smallest cosine similarity between (real) rows of the output, over the last axis."""
    return (
        torch.cosine_similarity(at_real_positions(got, mask), at_real_positions(expected, mask), dim=-1).min().item()
    )


def describe(path: Path) -> tuple[list[str], int]:
    """The graph's inputs as `name [axes]`, and its opset."""
    model = onnx.load(str(path), load_external_data=False)
    inputs = []
    for graph_input in model.graph.input:
        dims = (dim.dim_param or str(dim.dim_value) for dim in graph_input.type.tensor_type.shape.dim)
        inputs.append(f"{graph_input.name} [{', '.join(dims)}]")
    return inputs, next(opset.version for opset in model.opset_import if opset.domain in ("", "ai.onnx"))


def export(
    folder: Path,
    output: Path,
    opset: int | None = None,
    atol: float = 1e-4,
    quantize: bool = False,
    per_channel: bool = True,
) -> dict:
    """Export, check and write; returns the measurements printed."""
    int8_output = output.with_suffix(".int8.onnx")
    for path in [output] + ([int8_output] if quantize else []):
        if path.exists():
            fail(f"{path} exists: not overwriting it.")
    model = load_model(folder)
    names, axes, mask_name = input_layout(model)
    wrapper = FirstOutput(model, names)
    example = make_batch(model, names, *EXAMPLE_LENGTHS)
    with torch.no_grad():
        output_name = next(iter(model(**example, **wrapper.kwargs).keys()))
        per_position = mask_name is not None and wrapper(*example.values()).shape[:2] == example[mask_name].shape
    output_axes = {0: "batch", 1: axes[mask_name][1]} if per_position else {0: "batch"}
    check = make_batch(model, names, *CHECK_LENGTHS, seed=1)
    mask = check.get(mask_name)
    expected = pytorch_output(wrapper, tuple(check.values()))

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export_onnx-", dir=output.parent) as tmp:
        tmp_path = Path(tmp) / output.name
        with warnings.catch_warnings():  # shape checks read as constants: the padded-batch check below is the guard
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper,
                tuple(example.values()),
                str(tmp_path),
                dynamo=False,
                opset_version=opset,
                input_names=names,
                output_names=[output_name],
                dynamic_axes={**axes, output_name: output_axes},
            )
        if len(list(Path(tmp).iterdir())) > 1:
            fail("the graph was saved with external data (a model over 2 GB): not supported by this script.")
        inputs, opset = describe(tmp_path)
        dropped = [name for name in names if not any(graph_input.startswith(f"{name} ") for graph_input in inputs)]
        if dropped:  # traced away, e.g. a mask of ones in the example
            fail(f"the exported graph does not take {', '.join(dropped)}; nothing written.")
        difference = max_difference(run_onnx(tmp_path, check), expected, mask)
        if not difference <= atol:
            fail(
                f"the exported graph does not match PyTorch on a padded batch: max difference {difference:.3g} > "
                f"--atol {atol:g}; nothing written."
            )
        result = {"output": output_name, "inputs": inputs, "opset": opset, "max_difference": difference}
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            int8_tmp = Path(tmp) / int8_output.name
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # its notes, tensor by tensor, on what it leaves in float
            try:
                quantize_dynamic(
                    str(tmp_path),
                    str(int8_tmp),
                    op_types_to_quantize=QUANTIZED_OPS,
                    per_channel=per_channel,
                    weight_type=QuantType.QInt8,
                )
            finally:
                root.setLevel(level)
            got = run_onnx(int8_tmp, check)
            result["int8_max_difference"] = max_difference(got, expected, mask)
            if output_name.endswith("logits"):
                result["int8_argmax_agreement"] = argmax_agreement(got, expected, mask)
            else:
                result["int8_min_cosine"] = min_cosine(got, expected, mask)
        for path in [output] + ([int8_output] if quantize else []):
            if path.exists():  # appeared while exporting
                fail(f"{path} exists: not overwriting it.")
            shutil.move(Path(tmp) / path.name, path)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="saved EA model folder (save_pretrained or convert_checkpoint.py)")
    parser.add_argument("output", type=Path, help="new .onnx file (never overwritten)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--atol", type=float, default=1e-4, help="max abs difference allowed at real positions")
    parser.add_argument("--quantize", action="store_true", help="also write OUTPUT.int8.onnx (dynamic int8)")
    parser.add_argument("--per_tensor", action="store_true", help="--quantize: one weight scale per tensor")
    args = parser.parse_args(argv)
    if args.atol < 0:
        parser.error(f"--atol must be at least 0, got {args.atol}")
    if args.per_tensor and not args.quantize:
        parser.error("--per_tensor is an option of --quantize")
    result = export(args.folder, args.output, args.opset, args.atol, args.quantize, not args.per_tensor)
    print(f"wrote {args.output} (opset {result['opset']}) -> {result['output']}")
    print(f"inputs: {', '.join(result['inputs'])}")
    print(f"max difference onnxruntime vs PyTorch on a padded batch (real positions): {result['max_difference']:.3g}")
    if args.quantize:
        agreement = (
            f"argmax agreement {result['int8_argmax_agreement']:.1%}"
            if "int8_argmax_agreement" in result
            else f"min cosine similarity {result['int8_min_cosine']:.4f}"
        )
        print(
            f"wrote {args.output.with_suffix('.int8.onnx')}: max difference vs PyTorch "
            f"{result['int8_max_difference']:.3g}, {agreement}"
        )
    return result


if __name__ == "__main__":
    main()
