"""EA-ViT configuration: transformers' `ViTConfig` plus the evolving-attention fields."""

from huggingface_hub.dataclasses import strict
from transformers import ViTConfig

from .configuration_evolving_attention import EAEncoderConfigMixin


@strict
class EAViTConfig(EAEncoderConfigMixin, ViTConfig):
    r"""
    Every `ViTConfig` field, plus the EA fields of `EAEncoderConfigMixin` (`ea_alpha`, `ea_beta`, `ea_kernel_size`,
    `ea_activation`, `ea_encoder`) and:

    ea_conv (`str`, defaults to `"raster"`):
        `"raster"`: a Conv2d(H, H, k) over the (query, key) plane of the tokens in raster order (CLS first), as the
        authors' image models do. `"grid"`: a conv that respects the 2-D patch grid, a k x k neighbourhood of the query
        patch times one of the key patch (k^4 H^2 weights; see `EvolvingAttentionGridConv`).

    Loading a vanilla ViT config (`model_type: "vit"`) with `EAViTConfig.from_pretrained` converts it, with these
    defaults (or overrides passed as keyword arguments). The alpha/beta defaults are EA-BERT's (see `EABertConfig`).
    """

    model_type = "ea_vit"
    host_model_type = "vit"
    default_auto_map = {
        "AutoConfig": "configuration_ea_vit.EAViTConfig",
        "AutoModel": "modeling_ea_vit.EAViTModel",
        "AutoModelForImageClassification": "modeling_ea_vit.EAViTForImageClassification",
        "AutoModelForMaskedImageModeling": "modeling_ea_vit.EAViTForMaskedImageModeling",
    }

    ea_conv: str = "raster"


__all__ = ["EAViTConfig"]
