"""EA-ViT: the shared model tests over every head (raster and 2-D grid conv), plus what images need: batch
invariance, masked tokens that never leak, other resolutions, vanilla checkpoints in both parameter-name formats,
image processors, and errors for bad pixel values."""

import pytest
import torch
from safetensors.torch import save_file
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTForMaskedImageModeling,
    ViTImageProcessor,
    ViTModel,
)

from ea_hf import (
    EAViTConfig,
    EAViTForImageClassification,
    EAViTForMaskedImageModeling,
    EAViTModel,
    convert_checkpoint,
)

from ea_model_tester import EAModelTesterMixin, conv_parameters, outputs_to_compare
from tiny_configs import VIT as TINY


def pixels(batch_size=3, height=32, width=32, seed=1):
    torch.manual_seed(seed)
    return torch.randn(batch_size, 3, height, width)


class TestEAViT(EAModelTesterMixin):
    vanilla_config_class = ViTConfig
    config_class = EAViTConfig
    heads = [
        (EAViTModel, ViTModel),
        (EAViTForImageClassification, ViTForImageClassification),
        (EAViTForMaskedImageModeling, ViTForMaskedImageModeling),
    ]
    # masked image modeling's loss is a mean over each batch's masked pixels: not exact under gradient accumulation,
    # in transformers' ViT as here
    trainer_heads = [EAViTForImageClassification]
    conv = "raster"

    def make_config(self, **overrides):
        return EAViTConfig(**{**TINY, "ea_conv": self.conv, **overrides})

    def make_inputs(self, model_class, labels=False):
        inputs = {"pixel_values": pixels()}
        if labels and model_class is EAViTForImageClassification:
            inputs["labels"] = torch.tensor([0, 2, 1])
        if labels and model_class is EAViTForMaskedImageModeling:
            inputs["bool_masked_pos"] = torch.rand(3, 16) < 0.5
        return inputs

    def test_padding_invariance(self, head):
        """Images have no padding: instead, each image alone gives the same outputs as inside the batch."""
        model = self.build(head[0])
        inputs = self.make_inputs(head[0])
        batched = outputs_to_compare(model(**inputs, output_hidden_states=True, output_attentions=True))
        for i in range(3):
            alone = outputs_to_compare(
                model(
                    pixel_values=inputs["pixel_values"][i : i + 1], output_hidden_states=True, output_attentions=True
                )
            )
            for key, value in alone.items():
                self.assert_close(value, batched[key][i : i + 1], f"{key} of image {i}")

    def test_padding_content_never_reaches_real_positions(self, head):
        """Tokens masked out with `attention_mask` [B, 1 + h*w]: changing their patches' pixels leaves every output
        at the other tokens bit-identical (the conv sees zeros there, raster or grid)."""
        model = self.build(head[0])
        pixel_values = pixels()
        attention_mask = torch.ones(3, 17, dtype=torch.long)
        attention_mask[0, [3, 6]] = 0  # patches 2 and 5: grid rows 0 and 1
        attention_mask[2, 16] = 0  # the last patch
        changed = pixel_values.clone()
        changed[0, :, 0:8, 16:24] = 5.0  # patch 2
        changed[0, :, 8:16, 8:16] = -5.0  # patch 5
        changed[2, :, 24:32, 24:32] = 3.0  # patch 15
        kwargs = dict(attention_mask=attention_mask, output_hidden_states=True)
        reference = outputs_to_compare(model(pixel_values, **kwargs))
        got = outputs_to_compare(model(changed, **kwargs))
        real = attention_mask.bool()
        compared = 0
        for key, value in reference.items():
            if value.dim() >= 2 and value.shape[1] == 17:
                assert torch.equal(got[key][real], value[real]), key
                assert not torch.equal(got[key], value), key  # the masked tokens themselves did change
                compared += 1
        assert compared


class TestEAViTGridConv(TestEAViT):
    """The same tests with the conv that respects the 2-D patch grid."""

    conv = "grid"


@pytest.mark.parametrize("conv", ["raster", "grid"])
def test_other_resolutions_with_interpolated_positions(conv):
    """The EA conv does not depend on the token count: other image sizes work with `interpolate_pos_encoding`,
    and with EA off equal transformers' ViT at each size."""
    torch.manual_seed(0)
    model = EAViTForImageClassification(EAViTConfig(**TINY, ea_conv=conv, ea_alpha=0.5, ea_beta=0.5)).eval()
    off = EAViTForImageClassification(EAViTConfig(**TINY, ea_conv=conv, ea_alpha=0.0, ea_beta=0.0)).eval()
    off.load_state_dict(model.state_dict(), strict=False)
    vanilla = ViTForImageClassification(ViTConfig(**TINY)).eval()
    vanilla.set_attn_implementation("eager")
    vanilla.load_state_dict(model.state_dict(), strict=False)
    for height, width in ((48, 48), (24, 40)):
        images = pixels(2, height, width)
        output = model(images, interpolate_pos_encoding=True, output_attentions=True)
        tokens = 1 + (height // 8) * (width // 8)
        assert output.logits.shape == (2, 3) and output.attentions[-1].shape == (2, 4, tokens, tokens)
        expected = vanilla(images, interpolate_pos_encoding=True).logits
        torch.testing.assert_close(off(images, interpolate_pos_encoding=True).logits, expected, atol=1e-5, rtol=0)
        assert (output.logits - expected).abs().max() > 1e-4  # EA really acts at this size
        with pytest.raises(ValueError, match="doesn't match model"):
            model(images)  # another size without interpolation


def test_bad_pixel_values():
    model = EAViTForImageClassification(EAViTConfig(**TINY)).eval()
    with pytest.raises(ValueError, match=r"\[batch, 3 channels, height, width\]"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\[batch, 3 channels, height, width\]"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match="float tensor"):
        model(torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8))
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(torch.randn(2, 3, 32, 32), attention_mask=torch.ones(2, 16))
    with pytest.raises(ValueError, match="`ea_conv`"):
        EAViTConfig(**TINY, ea_conv="hexagonal")


def save_vanilla_vit(folder, new_names: bool) -> ViTForImageClassification:
    """A vanilla ViT classifier saved as transformers 5.x saves it (the older `encoder.layer.N.attention.attention.
    query` names) or with the current module names (`layers.N.attention.q_proj`), and an image processor."""
    torch.manual_seed(0)
    vanilla = ViTForImageClassification(ViTConfig(**TINY)).eval()
    vanilla.save_pretrained(folder)
    if new_names:
        save_file({k: v.contiguous() for k, v in vanilla.state_dict().items()}, str(folder / "model.safetensors"))
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return vanilla


@pytest.mark.parametrize("new_names", [False, True], ids=["old-names", "new-names"])
def test_vanilla_vit_checkpoint_loads_with_only_the_convs_new(new_names, tmp_path):
    vanilla = save_vanilla_vit(tmp_path, new_names)
    model, info = EAViTForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert set(info["missing_keys"]) == set(conv_parameters(model)) and len(info["missing_keys"]) == 2 * 2
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    off = EAViTForImageClassification.from_pretrained(tmp_path, ea_alpha=0.0, ea_beta=0.0).eval()
    vanilla.set_attn_implementation("eager")
    images = pixels()
    torch.testing.assert_close(off(images).logits, vanilla(images).logits, atol=1e-5, rtol=0)


def test_convert_checkpoint_saves_the_image_processor(tmp_path):
    save_vanilla_vit(tmp_path / "vit", new_names=False)
    out = convert_checkpoint(str(tmp_path / "vit"), str(tmp_path / "ea-vit"), ea_conv="grid")
    converted = AutoModelForImageClassification.from_pretrained(out)
    assert isinstance(converted, EAViTForImageClassification) and converted.config.ea_conv == "grid"
    processor = AutoImageProcessor.from_pretrained(out)
    assert processor.size == {"height": 32, "width": 32}


def test_image_processor_feeds_the_model(tmp_path):
    """ViTImageProcessor (and the fast one where torchvision is installed) turns PIL images into the model's input."""
    from PIL import Image

    model = EAViTForImageClassification(EAViTConfig(**TINY)).eval()
    images = [Image.fromarray((pixels(1, 40, 56)[0].permute(1, 2, 0).sigmoid() * 255).byte().numpy())] * 2
    processors = [ViTImageProcessor(size={"height": 32, "width": 32})]
    try:
        from transformers import ViTImageProcessorFast

        processors.append(ViTImageProcessorFast(size={"height": 32, "width": 32}))
    except ImportError:  # the fast processor needs torchvision, which does not import beside this torch
        pass
    for processor in processors:
        inputs = processor(images, return_tensors="pt")
        assert inputs["pixel_values"].shape == (2, 3, 32, 32) and inputs["pixel_values"].dtype == torch.float32
        logits = model(**inputs).logits
        torch.testing.assert_close(logits[0], logits[1])
