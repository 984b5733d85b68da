"""Traced, exported and compiled EA models compute what eager computes, for every family: ONNX (TorchScript and dynamo
exporters, run in onnxruntime), `torch.export.export` and `torch.compile(fullgraph=True)`.

Each model is exported from one unpadded example with dynamic batch and sequence axes, then run on padded batches of
two other shapes: the graph must take `attention_mask` (a mask of ones in the example must not be traced away) and
match eager PyTorch at the real positions.
"""

from dataclasses import dataclass, field

import onnx
import onnxruntime
import pytest
import torch

from ea_hf import (
    EABertConfig,
    EABertForMaskedLM,
    EABertForMultipleChoice,
    EABertForQuestionAnswering,
    EABertForSequenceClassification,
    EABertForTokenClassification,
    EABertModel,
    EADCTransformerConfig,
    EADCTransformerForTimeSeriesClassification,
    EADCTransformerModel,
    EALlamaConfig,
    EALlamaForCausalLM,
    EAMarianConfig,
    EAMarianMTModel,
    EAQwen2Config,
    EAQwen2ForCausalLM,
    EAT5Config,
    EAT5EncoderModel,
    EAT5ForConditionalGeneration,
    EAViTConfig,
    EAViTForImageClassification,
)
from scripts.examples import export_onnx  # the exporter's tensors-in, tensor-out form, the check at real positions

from tiny_configs import BERT, DC, LLAMA, MARIAN, T5, VIT


pytestmark = pytest.mark.usefixtures("one_thread")

EA = dict(ea_alpha=0.5, ea_beta=0.5)


@dataclass
class Case:
    """A model and its inputs: `names` in the order the exported graph takes them, `axes` their dynamic axes (name ->
    {axis: "batch" | "sequence" | "target"}), `make(lengths, target_lengths)` a batch whose i-th example has
    lengths[i] real positions (padded at the end to the longest), `mask` the input whose zeros mark the padded
    positions of the first output."""

    model_class: type
    config: object
    names: list[str]
    axes: dict[str, dict[int, str]]
    make: object
    mask: str | None = "attention_mask"
    max_lengths: dict[str, int] = field(default_factory=dict)


def length_mask(lengths, extra_axes=()) -> torch.Tensor:
    """The 0/1 mask [B, *extra_axes, max(lengths)] of examples with lengths[i] real positions, padded at the end."""
    shape = (len(lengths), *extra_axes, max(lengths))
    mask = torch.arange(max(lengths)) < torch.tensor(lengths).view(-1, *[1] * (len(shape) - 1))
    return mask.long().expand(shape).contiguous()


def padded(lengths, vocab_size, seed, extra_axes=()):
    """Token ids [B, *extra_axes, max(lengths)] (ids >= 2, 0 at padding) and their 0/1 mask."""
    mask = length_mask(lengths, extra_axes)
    ids = torch.randint(2, vocab_size, mask.shape, generator=torch.Generator().manual_seed(seed))
    return ids.masked_fill(mask == 0, 0), mask


def bert_case(model_class):
    extra = (2,) if model_class is EABertForMultipleChoice else ()
    sequence_axis = 1 + len(extra)

    def make(lengths, targets=None, seed=0):
        input_ids, attention_mask = padded(lengths, 99, seed, extra)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": torch.zeros_like(input_ids),
        }

    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", sequence_axis: "sequence"} for name in names}
    return Case(model_class, EABertConfig(**BERT, **EA), names, axes, make, max_lengths={"sequence": 64})


def causal_lm_case(model_class, config):
    def make(lengths, targets=None, seed=0):
        input_ids, attention_mask = padded(lengths, 60, seed)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    names = ["input_ids", "attention_mask"]
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    return Case(model_class, config, names, axes, make, max_lengths={"sequence": 64})


def seq2seq_case(model_class, config, max_lengths=None):
    def make(lengths, targets, seed=0):
        input_ids, attention_mask = padded(lengths, 60, seed)
        decoder_input_ids, decoder_attention_mask = padded(targets, 60, seed + 1)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "decoder_input_ids": decoder_input_ids,
            "decoder_attention_mask": decoder_attention_mask,
        }

    names = ["input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask"]
    axes = {name: {0: "batch", 1: "target" if name.startswith("decoder") else "sequence"} for name in names}
    return Case(model_class, config, names, axes, make, "decoder_attention_mask", max_lengths or {})


def t5_encoder_case():
    def make(lengths, targets=None, seed=0):
        input_ids, attention_mask = padded(lengths, 60, seed)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    names = ["input_ids", "attention_mask"]
    return Case(EAT5EncoderModel, EAT5Config(**T5, **EA), names, {n: {0: "batch", 1: "sequence"} for n in names}, make)


def vit_case(conv):
    def make(lengths, targets=None, seed=0):  # images have no padding: one image per entry of `lengths`
        return {"pixel_values": torch.randn(len(lengths), 3, 32, 32, generator=torch.Generator().manual_seed(seed))}

    config = EAViTConfig(**VIT, **EA, ea_conv=conv)
    return Case(EAViTForImageClassification, config, ["pixel_values"], {"pixel_values": {0: "batch"}}, make, None)


def dc_case(model_class):
    def make(lengths, targets=None, seed=0):
        attention_mask = length_mask(lengths)
        values = torch.randn(len(lengths), max(lengths), 3, generator=torch.Generator().manual_seed(seed))
        values = values * attention_mask[..., None]
        return {"past_values": values, "attention_mask": attention_mask}

    names = ["past_values", "attention_mask"]
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    return Case(model_class, EADCTransformerConfig(**DC, **EA), names, axes, make, max_lengths={"sequence": 12})


CASES = {
    "EABertModel": bert_case(EABertModel),
    "EABertForSequenceClassification": bert_case(EABertForSequenceClassification),
    "EABertForMaskedLM": bert_case(EABertForMaskedLM),
    "EABertForTokenClassification": bert_case(EABertForTokenClassification),
    "EABertForQuestionAnswering": bert_case(EABertForQuestionAnswering),
    "EABertForMultipleChoice": bert_case(EABertForMultipleChoice),
    "EAT5EncoderModel": t5_encoder_case(),
    "EAT5ForConditionalGeneration": seq2seq_case(EAT5ForConditionalGeneration, EAT5Config(**T5, **EA)),
    "EAMarianMTModel": seq2seq_case(EAMarianMTModel, EAMarianConfig(**MARIAN, **EA), {"sequence": 64, "target": 64}),
    "EALlamaForCausalLM": causal_lm_case(EALlamaForCausalLM, EALlamaConfig(**LLAMA, **EA)),
    "EAQwen2ForCausalLM": causal_lm_case(EAQwen2ForCausalLM, EAQwen2Config(**LLAMA, **EA)),
    "EAViT-raster": vit_case("raster"),
    "EAViT-grid": vit_case("grid"),
    "EADCTransformerModel": dc_case(EADCTransformerModel),
    "EADCTransformerForTimeSeriesClassification": dc_case(EADCTransformerForTimeSeriesClassification),
}
# one model of each family, for the slower exporters and the compiler (EA-ViT's raster conv is EA-BERT's; the grid
# conv and the patch embeddings run in EAViT-grid)
FAMILIES = [
    "EABertForSequenceClassification",
    "EAT5ForConditionalGeneration",
    "EAMarianMTModel",
    "EALlamaForCausalLM",
    "EAViT-grid",
    "EADCTransformerForTimeSeriesClassification",
]
# torch.export: every case but the EA-BERT heads that differ from sequence classification only in their last layer
# (the TorchScript exporter runs them all)
EXPORT_CASES = [
    name
    for name in CASES
    if name not in ("EABertModel", "EABertForMaskedLM", "EABertForTokenClassification", "EABertForQuestionAnswering")
]
# the example: one unpadded example (TorchScript tracing keeps batch 1 dynamic; torch.export specialises sizes 0
# and 1, so its example holds two unpadded examples); then two padded batches of other shapes
EXAMPLE, EXPORT_EXAMPLE = ([7], [5]), ([7, 7], [5, 5])
PADDED_BATCHES = (([9, 4, 7], [6, 3, 5]), ([11, 5], [4, 8]))


def build(case: Case) -> export_onnx.FirstOutput:
    torch.manual_seed(0)
    model = case.model_class(case.config).eval()
    with torch.no_grad():  # the convs away from their identity init, so that EA really mixes
        for name, parameter in model.named_parameters():
            if ".evolving_attention.conv." in name:
                parameter.normal_(std=0.3)
    return export_onnx.FirstOutput(model, case.names)  # in the model's mode: eval


def batches(case: Case, lengths) -> tuple:
    inputs = case.make(*lengths)
    return tuple(inputs[name] for name in case.names), inputs.get(case.mask)


def assert_equal_at_real_positions(got, expected, mask, atol):
    """Outputs with the mask's leading axes are compared where the mask is 1; other outputs in full."""
    got, expected = torch.as_tensor(got), expected.detach()
    assert got.shape == expected.shape
    at_real = export_onnx.at_real_positions
    torch.testing.assert_close(at_real(got, mask), at_real(expected, mask), atol=atol, rtol=0)


def dynamic_shapes(case: Case):
    dims = {}
    for axis_name in {name for axes in case.axes.values() for name in axes.values()}:
        dims[axis_name] = torch.export.Dim(axis_name, max=case.max_lengths.get(axis_name, 1024))
    return ({axis: dims[name] for axis, name in case.axes[input_name].items()} for input_name in case.names)


def check_onnx(path, case: Case, model: export_onnx.FirstOutput):
    graph_inputs = [graph_input.name for graph_input in onnx.load(str(path)).graph.input]
    assert graph_inputs == case.names  # attention_mask kept, though the example's is all ones
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for lengths in PADDED_BATCHES:
        inputs, mask = batches(case, lengths)
        (got,) = session.run(None, {name: x.numpy() for name, x in zip(case.names, inputs)})
        with torch.no_grad():
            assert_equal_at_real_positions(got, model(*inputs), mask, atol=1e-4)


@pytest.mark.parametrize("name", CASES)
def test_torchscript_onnx_export_equals_eager(name, tmp_path):
    case = CASES[name]
    model = build(case)
    example, _ = batches(case, EXAMPLE)
    path = tmp_path / "model.onnx"
    torch.onnx.export(
        model,
        example,
        str(path),
        dynamo=False,
        input_names=case.names,
        output_names=["output"],
        dynamic_axes={**case.axes, "output": {0: "batch"}},
    )
    check_onnx(path, case, model)


@pytest.mark.parametrize("name", FAMILIES)
def test_dynamo_onnx_export_equals_eager(name, tmp_path):
    case = CASES[name]
    model = build(case)
    example, _ = batches(case, EXPORT_EXAMPLE)
    program = torch.onnx.export(
        model,
        example,
        dynamo=True,
        dynamic_shapes=(tuple(dynamic_shapes(case)),),
        input_names=case.names,
        output_names=["output"],
        verbose=False,
    )
    program.save(str(tmp_path / "model.onnx"))
    check_onnx(tmp_path / "model.onnx", case, model)


@pytest.mark.parametrize("name", EXPORT_CASES)
def test_torch_export_equals_eager(name):
    case = CASES[name]
    model = build(case)
    example, _ = batches(case, EXPORT_EXAMPLE)
    exported = torch.export.export(model, example, dynamic_shapes=(tuple(dynamic_shapes(case)),)).module()
    for lengths in PADDED_BATCHES:
        inputs, mask = batches(case, lengths)
        with torch.no_grad():
            assert_equal_at_real_positions(exported(*inputs), model(*inputs), mask, atol=1e-4)


@pytest.mark.parametrize("name", FAMILIES)
def test_compiled_fullgraph_equals_eager(name):
    """`torch.compile(fullgraph=True, dynamic=True)` captures the whole forward, no graph break anywhere: inference
    on padded batches of two shapes, and the gradients of one training step. (The "eager" backend runs the captured
    graph as it is; tests/test_torch_compile.py runs inductor's generated code.)"""
    case = CASES[name]
    model = build(case)
    torch._dynamo.reset()  # every case compiles the same `FirstOutput.forward`: stay below the recompile limit
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="eager")
    for lengths in PADDED_BATCHES:
        inputs, mask = batches(case, lengths)
        with torch.no_grad():
            assert_equal_at_real_positions(compiled(*inputs), model(*inputs), mask, atol=1e-4)

    def gradients(module):
        model.zero_grad(set_to_none=True)
        module(*inputs).float().pow(2).mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.train()
    expected, got = gradients(model), gradients(compiled)
    assert got.keys() == expected.keys() and any(".evolving_attention.conv." in n for n in got)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=1e-4, msg=key)
