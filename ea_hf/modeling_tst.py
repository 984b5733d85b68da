"""The TST-style baseline for time series (Zerveas et al., KDD 2021): a plain Transformer encoder with BatchNorm,
learnable positions and the same flattening head as the EA-DC-Transformer, so that `scripts/examples/run_uea.py`
compares the three models under one protocol. No evolving attention."""

from huggingface_hub.dataclasses import strict
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedConfig
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .evolving_attention import evolving_attention_forward, padding_mask_from
from .modeling_ea_dc_transformer import (
    EADCTransformerForTimeSeriesClassification,
    EADCTransformerForTimeSeriesRegression,
    EADCTransformerPreTrainedModel,
    MaskedBatchNorm1d,
    TimeSeriesEmbedding,
    check_past_values,
)


@strict
class TSTConfig(PreTrainedConfig):
    r"""TST's supervised defaults: d_model 64, 8 heads, 3 layers, feed-forward 256, dropout 0.1, BatchNorm."""

    model_type = "tst"

    num_channels: int = 1
    context_length: int = 128
    d_model: int = 64
    num_layers: int = 3
    num_attention_heads: int = 8
    dim_feedforward: int = 256
    dropout: float | int = 0.1


class TSTLayer(nn.Module):
    """Self-attention and a GELU feed-forward sub-layer, each with a residual and a (masked) BatchNorm after it."""

    def __init__(self, config: TSTConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out_proj = nn.Linear(config.d_model, config.d_model)
        self.norm1 = MaskedBatchNorm1d(config.d_model)
        self.fc1 = nn.Linear(config.d_model, config.dim_feedforward)
        self.fc2 = nn.Linear(config.dim_feedforward, config.d_model)
        self.norm2 = MaskedBatchNorm1d(config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states, padding_mask=None):
        """hidden_states [B, T, d_model], padding_mask [B, T] bool. Returns [B, T, d_model]."""
        batch_size, length = hidden_states.shape[:2]
        heads = (batch_size, length, self.num_heads, -1)
        query, key, value = (x.view(heads).transpose(1, 2) for x in self.qkv(hidden_states).chunk(3, dim=-1))
        attended, _, _, _ = evolving_attention_forward(
            query, key, value, None, scaling=query.shape[-1] ** -0.5, query_mask=padding_mask, key_mask=padding_mask
        )
        attended = self.out_proj(attended.reshape(batch_size, length, -1))
        hidden_states = self.norm1(hidden_states + self.dropout(attended), padding_mask)
        feed_forward = self.fc2(self.dropout(F.gelu(self.fc1(hidden_states))))
        return self.norm2(hidden_states + self.dropout(feed_forward), padding_mask)


class TSTModel(EADCTransformerPreTrainedModel):
    """Input projection, learnable positions and the TST layers. Outputs `last_hidden_state` [B, T, d_model]."""

    config_class = TSTConfig
    _no_split_modules = ["TSTLayer"]
    _can_record_outputs = {"hidden_states": TSTLayer}

    def __init__(self, config: TSTConfig):
        super().__init__(config)
        self.embeddings = TimeSeriesEmbedding(config)
        self.layers = nn.ModuleList([TSTLayer(config) for _ in range(config.num_layers)])
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    def forward(self, past_values=None, attention_mask=None, **kwargs) -> BaseModelOutput:
        """past_values [B, T, C] float, attention_mask [B, T] (1 at real time steps)."""
        check_past_values(past_values, self.config)
        padding_mask = padding_mask_from(attention_mask, past_values.shape[:2], "attention_mask")
        hidden_states = self.embeddings(past_values)
        for layer in self.layers:
            hidden_states = layer(hidden_states, padding_mask)
        return BaseModelOutput(last_hidden_state=hidden_states)


class TSTForTimeSeriesClassification(EADCTransformerForTimeSeriesClassification):
    config_class = TSTConfig
    base_model_class = TSTModel
    _no_split_modules = ["TSTLayer"]


class TSTForTimeSeriesRegression(EADCTransformerForTimeSeriesRegression):
    config_class = TSTConfig
    base_model_class = TSTModel
    _no_split_modules = ["TSTLayer"]


__all__ = ["TSTConfig", "TSTForTimeSeriesClassification", "TSTForTimeSeriesRegression", "TSTModel"]
