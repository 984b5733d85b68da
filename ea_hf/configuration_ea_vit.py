"""EA-ViT configuration: transformers' `ViTConfig` plus the evolving-attention fields."""

from huggingface_hub.dataclasses import strict
from transformers import ViTConfig

from .evolving_attention import EAConfigMixin


@strict
class EAViTConfig(EAConfigMixin, ViTConfig):
    r"""
    Every `ViTConfig` field, plus:

    ea_alpha (`float`, defaults to 0.1):
        Weight of the convolution branch: `E = alpha * act(conv(M)) + (1 - alpha) * M`.
    ea_beta (`float`, defaults to 0.1):
        Weight of the previous layer's map: `M = (1 - beta) * S + beta * E_prev`.
    ea_kernel_size (`int`, defaults to 3):
        Odd kernel size of the convolution.
    ea_activation (`str`, defaults to `"relu"`):
        Activation of the convolution branch: `"relu"`, `"leaky_relu"`, `"gelu"` or `"identity"`.
    ea_encoder (`bool`, defaults to `True`):
        Evolve the attention maps through the encoder's layers. With `False` (or `ea_alpha = ea_beta = 0`) the model
        computes exactly what `ViTModel` computes.
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

    ea_alpha: float | int = 0.1
    ea_beta: float | int = 0.1
    ea_kernel_size: int = 3
    ea_activation: str = "relu"
    ea_encoder: bool = True
    ea_conv: str = "raster"


__all__ = ["EAViTConfig"]
