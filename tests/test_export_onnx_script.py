"""`scripts/examples/export_onnx.py`: saved EA folders exported to ONNX, checked in onnxruntime before anything is
written.

Tiny models of four families (the EA convs away from their identity init, so that EA really mixes) are saved with
`save_pretrained`; the written graph must take attention_mask and match eager PyTorch on a padded batch of a shape
the script did not check; the script refuses to overwrite, to write a graph that does not match, and to read a
folder that is not an EA model.
"""

import onnx
import onnxruntime
import pytest
import torch
from transformers import BertConfig

from ea_hf import (
    EABertConfig,
    EABertForSequenceClassification,
    EADCTransformerConfig,
    EADCTransformerForTimeSeriesClassification,
    EAMarianConfig,
    EAMarianMTModel,
    EAViTConfig,
    EAViTForImageClassification,
)
from scripts.examples import export_onnx

from tiny_configs import BERT, DC, MARIAN, VIT


pytestmark = pytest.mark.usefixtures("one_thread")

EA = dict(ea_alpha=0.5, ea_beta=0.5)
TEXT = ["input_ids", "attention_mask"]
SEQ2SEQ = TEXT + ["decoder_input_ids", "decoder_attention_mask"]
# name -> (model class, config, graph inputs, the input whose zeros mark the output's padded positions)
MODELS = {
    "bert": (
        EABertForSequenceClassification,
        EABertConfig(**BERT, **EA),
        TEXT + ["token_type_ids"],
        "attention_mask",
    ),
    "marian": (
        EAMarianMTModel,
        EAMarianConfig(**MARIAN, **EA),
        SEQ2SEQ,
        "decoder_attention_mask",
    ),
    "dc": (
        EADCTransformerForTimeSeriesClassification,
        EADCTransformerConfig(**DC, **EA),
        ["past_values", "attention_mask"],
        "attention_mask",
    ),
    "vit": (
        EAViTForImageClassification,
        EAViTConfig(**VIT, ea_conv="grid", **EA),
        ["pixel_values"],
        None,
    ),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ea-folders")
    for name, (model_class, config, _, _) in MODELS.items():
        torch.manual_seed(0)
        model = model_class(config)
        with torch.no_grad():
            for parameter_name, parameter in model.named_parameters():
                if ".evolving_attention.conv." in parameter_name:
                    parameter.normal_(std=0.3)
        model.save_pretrained(root / name)
        if name == "bert":  # and as freshly converted: the EA convs at their identity init, identical across layers
            model_class(config).save_pretrained(root / "bert-fresh")
    return root


def padded_batch(name, lengths=(10, 3, 6), targets=(2, 9, 5)):
    """A batch of a shape the script's check did not use, padded at the end (0 ids, 0 values at padding)."""
    generator = torch.Generator().manual_seed(7)
    if name == "vit":
        return {"pixel_values": torch.randn(len(lengths), 3, 32, 32, generator=generator)}

    def mask(lengths):
        return (torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]).long()

    if name == "dc":
        values = torch.randn(len(lengths), max(lengths), 3, generator=generator) * mask(lengths)[..., None]
        return {"past_values": values, "attention_mask": mask(lengths)}
    batch = {"input_ids": torch.randint(1, 60, (len(lengths), max(lengths)), generator=generator) * mask(lengths)}
    batch["attention_mask"] = mask(lengths)
    if name == "bert":
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    else:
        batch["decoder_input_ids"] = torch.randint(1, 60, (len(targets), max(targets)), generator=generator)
        batch["decoder_attention_mask"] = mask(targets)
        batch["decoder_input_ids"] *= batch["decoder_attention_mask"]
    return batch


@pytest.mark.parametrize("name", MODELS)
def test_writes_a_graph_that_matches_eager(name, folders, tmp_path, capsys):
    model_class, _, names, mask_name = MODELS[name]
    output = tmp_path / f"{name}.onnx"
    result = export_onnx.main([str(folders / name), str(output)])
    assert [graph_input.name for graph_input in onnx.load(str(output)).graph.input] == names
    assert result["max_difference"] <= 1e-4
    printed = capsys.readouterr().out
    assert f"wrote {output}" in printed and "max difference" in printed
    assert ("attention_mask [batch, sequence]" in printed) == (mask_name is not None)
    assert sorted(path.name for path in tmp_path.iterdir()) == [output.name]  # nothing else, no temporary folder

    batch = padded_batch(name)
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {key: value.numpy() for key, value in batch.items()})
    model = model_class.from_pretrained(folders / name).eval()
    with torch.no_grad():
        expected = model(**batch, **({"use_cache": False} if name == "marian" else {})).logits
    got = torch.from_numpy(got)
    if name == "marian":  # per target position: compare the real ones
        real = batch[mask_name].bool()
        got, expected = got[real], expected[real]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_refuses_to_overwrite(folders, tmp_path):
    output = tmp_path / "model.onnx"
    output.write_bytes(b"keep me")
    with pytest.raises(SystemExit, match="exists: not overwriting"):
        export_onnx.main([str(folders / "dc"), str(output)])
    assert output.read_bytes() == b"keep me"


def test_refuses_to_write_a_graph_that_does_not_match(folders, tmp_path, monkeypatch):
    reference = export_onnx.pytorch_output
    monkeypatch.setattr(export_onnx, "pytorch_output", lambda *args: reference(*args) + 0.01)
    with pytest.raises(SystemExit, match=r"does not match PyTorch.*max difference 0\.01 > --atol 0\.0001"):
        export_onnx.main([str(folders / "bert"), str(tmp_path / "out" / "model.onnx"), "--quantize"])
    assert list((tmp_path / "out").iterdir()) == []  # neither graph, nor the temporary folder


@pytest.mark.parametrize("name, flags", [("bert", []), ("bert-fresh", []), ("bert", ["--per_tensor"])])
def test_quantize_writes_an_int8_graph_and_reports_agreement(name, flags, folders, tmp_path, capsys):
    """Linear layers and embeddings in int8, the EA convs in float. (The fresh folder's EA convs, all at their identity
    init, are one weight that the exporter shares through Identity nodes.)"""
    output = tmp_path / "model.onnx"
    result = export_onnx.main([str(folders / name), str(output), "--quantize", *flags])
    int8 = tmp_path / "model.int8.onnx"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.int8.onnx", "model.onnx"]
    graph = onnx.load(str(int8)).graph
    ops = {node.op_type for node in graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger", "Conv"} <= ops and "ConvInteger" not in ops
    eight_bit = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    quantized = {initializer.name for initializer in graph.initializer if initializer.data_type in eight_bit}
    assert "model.bert.embeddings.word_embeddings.weight_quantized" in quantized  # Gather: the embeddings too
    scales = [list(initializer.dims) for initializer in graph.initializer if initializer.name.endswith("_scale")]
    assert any(dims and dims[0] > 1 for dims in scales) == (not flags)  # per-channel scales are vectors
    # the tiny random head's two logits are close: int8 may flip a near tie, so the agreement is only reported
    assert 0 < result["int8_max_difference"] < 0.1 and 0 <= result["int8_argmax_agreement"] <= 1
    report = f"max difference vs PyTorch {result['int8_max_difference']:.3g}, argmax agreement"
    assert f"wrote {int8}: {report} {result['int8_argmax_agreement']:.1%}" in capsys.readouterr().out


def test_refuses_what_is_not_an_ea_folder(tmp_path):
    with pytest.raises(SystemExit, match="no such folder"):
        export_onnx.main([str(tmp_path / "missing"), str(tmp_path / "model.onnx")])
    BertConfig(vocab_size=99, hidden_size=32, architectures=["BertForMaskedLM"]).save_pretrained(tmp_path / "bert")
    found = r"not an EA model: its config.json has model_type 'bert' \(architectures \['BertForMaskedLM'\]\)"
    with pytest.raises(SystemExit, match=found):
        export_onnx.main([str(tmp_path / "bert"), str(tmp_path / "model.onnx")])
    assert not (tmp_path / "model.onnx").exists()


def test_a_mistyped_folder_names_what_its_parent_holds(tmp_path):
    (tmp_path / "ea-model").mkdir()
    with pytest.raises(SystemExit, match=r"folder .*ea-modle: no such folder \(.* holds ea-model\)"):
        export_onnx.main([str(tmp_path / "ea-modle"), str(tmp_path / "model.onnx")])
