"""EA-DC-Transformer configuration: the authors' dilated causal convolution Transformer for time series, with the
evolving-attention fields."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .configuration_evolving_attention import EAEncoderConfigMixin


@strict
class EADCTransformerConfig(EAEncoderConfigMixin, PreTrainedConfig):
    r"""
    Defaults are those of the authors' `EACausalConv` model (pkuyym/EvolvingAttention, `options.py` and `main.py`).

    num_channels (`int`, defaults to 1):
        C, the variables of each time step.
    context_length (`int`, defaults to 128):
        The longest series the model takes: the learnable position table and the flattening head have this length.
    d_model (`int`, defaults to 64):
        Width of every block (the authors tried 64 and 128, with the hidden size equal to it).
    num_blocks (`int`, defaults to 4):
        Dilated causal blocks; block i uses dilation `2 ** i` (the authors' `num_layers = 3` gives four blocks).
    kernel_size (`int`, defaults to 3):
        Kernel of the causal convolutions over time.
    dim_feedforward (`int`, defaults to 256):
        Hidden size of the position-wise feed-forward sub-layers (two per block).
    num_attention_heads (`int`, defaults to 8):
        Heads of each attention branch (the channels of the EA convolution).
    attention_key_fraction, attention_value_fraction (`float`, default to 0.125):
        Key and value widths of each attention branch as fractions of `d_model` (the authors' `k` and `v`); the
        convolution branch gets the other `d_model - value width` output channels.
    dropout (`float`, defaults to 0.1):
        Dropout on positions, feed-forward sub-layers, forwarded attention logits and the head.
    ea_alpha, ea_beta, ea_kernel_size, ea_activation, ea_encoder:
        The EA fields of `EAEncoderConfigMixin`, with the authors' time-series defaults: alpha 0.3, beta 0.7,
        activation `"leaky_relu"`. The chain runs through the attention branches of blocks 1 and up (block 0 has none).
    """

    model_type = "ea_dc_transformer"
    host_model_type = None  # no vanilla model to convert from
    default_auto_map = {
        "AutoConfig": "configuration_ea_dc_transformer.EADCTransformerConfig",
        "AutoModel": "modeling_ea_dc_transformer.EADCTransformerModel",
        "AutoModelForSequenceClassification": "modeling_ea_dc_transformer.EADCTransformerForTimeSeriesClassification",
    }

    num_channels: int = 1
    context_length: int = 128
    d_model: int = 64
    num_blocks: int = 4
    kernel_size: int = 3
    dim_feedforward: int = 256
    num_attention_heads: int = 8
    attention_key_fraction: float = 0.125
    attention_value_fraction: float = 0.125
    dropout: float | int = 0.1
    ea_alpha: float | int = 0.3
    ea_beta: float | int = 0.7
    ea_activation: str = "leaky_relu"

    def __post_init__(self, **kwargs):
        key_width = int(self.d_model * self.attention_key_fraction)
        value_width = int(self.d_model * self.attention_value_fraction)
        for name, width in (("attention_key_fraction", key_width), ("attention_value_fraction", value_width)):
            if width < self.num_attention_heads or width % self.num_attention_heads:
                raise ValueError(
                    f"`{name}` * d_model = {width} must be a positive multiple of num_attention_heads "
                    f"({self.num_attention_heads})."
                )
        if value_width >= self.d_model:
            raise ValueError("`attention_value_fraction` must leave output channels for the convolution branch.")
        for name in ("num_channels", "context_length", "d_model", "num_blocks", "kernel_size", "dim_feedforward"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)}.")
        super().__post_init__(**kwargs)


__all__ = ["EADCTransformerConfig"]
