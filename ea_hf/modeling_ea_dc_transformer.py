"""EA-DC-Transformer: the paper's dilated causal convolution Transformer for time series, with the EA chain running
through the attention branches of its blocks (Wang et al., TPAMI 2023; the authors' `EACausalConv` model).

The architecture is the authors': input projection (scaled by sqrt(d_model)), learnable positions, blocks of dilated
causal convolution (dilation doubling per block) whose two layers are attention-augmented convolutions (a causal conv
branch and an attention branch side by side, concatenated over channels), each followed by BatchNorm and a
feed-forward sub-layer; the attention logits go layer to layer through LeakyReLU and dropout; a flattening head.
Their defects are fixed (docs/time-series.md): no random position logits (positions come from the learned table), heads
merged without scrambling, residuals around the feed-forward sub-layers, no unused modules, any device; and
variable-length series are handled: the attention, the EA conv and the BatchNorm statistics honour the padding mask,
and the convolutions are causal, so a series alone and padded in a batch give the same outputs. The authors' weight
normalisation of the conv branch is left out (BatchNorm follows it).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_ea_dc_transformer import EADCTransformerConfig
from .evolving_attention import (
    EAPreTrainedMixin,
    EvolvingAttentionStep,
    evolving_attention_forward,
    is_tracing,
    padding_mask_from,
)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm of the channels of [B, T, C] whose training statistics use only the real time steps (mask [B, T])."""

    def forward(self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training or padding_mask is None:
            return super().forward(hidden_states.transpose(1, 2)).transpose(1, 2)
        real = padding_mask[..., None].to(hidden_states.dtype)
        count = real.sum()
        mean = (hidden_states * real).sum((0, 1)) / count
        variance = ((hidden_states - mean) ** 2 * real).sum((0, 1)) / count
        with torch.no_grad():
            unbiased = variance * count / (count - 1).clamp(min=1)
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(unbiased, self.momentum)
            self.num_batches_tracked += 1
        return (hidden_states - mean) / torch.sqrt(variance + self.eps) * self.weight + self.bias


class EADCAttentionConv(nn.Module):
    """The authors' attention-augmented causal convolution: a dilated causal Conv1d branch (d_model - value width
    channels) and a multi-head attention branch (value width channels) over the same input, concatenated."""

    def __init__(self, config: EADCTransformerConfig, dilation: int, evolve: bool):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.key_width = int(config.d_model * config.attention_key_fraction)
        self.value_width = int(config.d_model * config.attention_value_fraction)
        self.scaling = (self.key_width // self.num_heads) ** -0.5  # a Python float: traced graphs keep no shape maths
        self.causal_padding = (config.kernel_size - 1) * dilation
        self.conv = nn.Conv1d(config.d_model, config.d_model - self.value_width, config.kernel_size, dilation=dilation)
        self.qkv = nn.Linear(config.d_model, 2 * self.key_width + self.value_width)  # a 1x1 conv over time
        self.evolving_attention = EvolvingAttentionStep(config, self.num_heads) if evolve else None

    def forward(self, hidden_states, previous_logits=None, padding_mask=None):
        """
        Args:
            hidden_states: [B, T, d_model]; previous_logits: [B, H, T, T] or None; padding_mask: [B, T] bool or None.
        Returns:
            output [B, T, d_model], attention probabilities [B, H, T, T], evolved logits [B, H, T, T].
        """
        batch_size, length = hidden_states.shape[:2]
        convolved = self.conv(F.pad(hidden_states.transpose(1, 2), (self.causal_padding, 0))).transpose(1, 2)
        query, key, value = self.qkv(hidden_states).split([self.key_width, self.key_width, self.value_width], dim=-1)
        query, key, value = (
            x.view(batch_size, length, self.num_heads, -1).transpose(1, 2) for x in (query, key, value)
        )
        attended, probabilities, logits, _ = evolving_attention_forward(
            query,
            key,
            value,
            self.evolving_attention,
            previous_logits,
            scaling=self.scaling,
            query_mask=padding_mask,
            key_mask=padding_mask,
        )
        attended = attended.reshape(batch_size, length, self.value_width)  # heads merged per position
        return torch.cat([convolved, attended], dim=-1), probabilities, logits


class EADCFeedForward(nn.Module):
    """Position-wise Linear, LeakyReLU, dropout, Linear, with a residual (the authors' has none)."""

    def __init__(self, config: EADCTransformerConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, config.dim_feedforward)
        self.fc2 = nn.Linear(config.dim_feedforward, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states [B, T, d_model] -> [B, T, d_model]."""
        return hidden_states + self.dropout(self.fc2(self.dropout(F.leaky_relu(self.fc1(hidden_states)))))


class EADCBlock(GradientCheckpointingLayer):
    """Two attention-augmented causal conv layers at dilation 2^i, each with BatchNorm and a feed-forward sub-layer,
    a residual around the block and a BatchNorm after it. Block 0 has no EA step."""

    def __init__(self, config: EADCTransformerConfig, block_idx: int):
        super().__init__()
        evolve = config.ea_encoder and block_idx > 0
        self.layers = nn.ModuleList([EADCAttentionConv(config, 2**block_idx, evolve) for _ in range(2)])
        self.norms = nn.ModuleList([MaskedBatchNorm1d(config.d_model) for _ in range(2)])
        self.feed_forwards = nn.ModuleList([EADCFeedForward(config) for _ in range(2)])
        self.output_norm = MaskedBatchNorm1d(config.d_model)
        self.logits_dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states, previous_logits=None, padding_mask=None):
        """hidden_states [B, T, d_model], previous_logits [B, H, T, T]. Returns hidden states and the logits handed
        to the next attention layer (through LeakyReLU and dropout, as the authors do)."""
        output = hidden_states
        for layer, norm, feed_forward in zip(self.layers, self.norms, self.feed_forwards):
            output, _, logits = layer(output, previous_logits, padding_mask)
            output = feed_forward(norm(output, padding_mask))
            previous_logits = self.logits_dropout(F.leaky_relu(logits))
        return self.output_norm(output + hidden_states, padding_mask), previous_logits


class TimeSeriesEmbedding(nn.Module):
    """Input projection (times sqrt(d_model)) plus a learnable position table of `context_length` rows, dropout."""

    def __init__(self, config):
        super().__init__()
        self.scale = math.sqrt(config.d_model)
        self.projection = nn.Linear(config.num_channels, config.d_model)
        self.position_embeddings = nn.Parameter(torch.zeros(config.context_length, config.d_model))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, past_values: torch.Tensor) -> torch.Tensor:
        """past_values [B, T, C] -> [B, T, d_model]."""
        positions = self.position_embeddings[: past_values.shape[1]]
        return self.dropout(self.projection(past_values) * self.scale + positions)


class EADCTransformerPreTrainedModel(EAPreTrainedMixin, PreTrainedModel):
    config: EADCTransformerConfig
    config_class = EADCTransformerConfig
    base_model_prefix = "model"
    main_input_name = "past_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["EADCBlock"]
    _can_record_outputs = {"hidden_states": EADCBlock, "attentions": OutputRecorder(EADCAttentionConv, index=1)}

    def _init_weights(self, module):
        """PyTorch's default initialisation of Linear and Conv1d layers, as the authors' (and TST's) code has it:
        transformers' usual normal(0, 0.02) leaves the 1-dimensional attention heads of the default config with
        logits near zero, that is uniform attention that EA cannot shape."""
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            fan_in = module.weight[0].numel()
            init.uniform_(module.bias, -(fan_in**-0.5), fan_in**-0.5)
        elif isinstance(module, TimeSeriesEmbedding):
            init.uniform_(module.position_embeddings, -0.02, 0.02)
        else:
            super()._init_weights(module)


class EADCTransformerModel(EADCTransformerPreTrainedModel):
    """Input projection, learnable positions and the blocks. Outputs `last_hidden_state` [B, T, d_model]."""

    def __init__(self, config: EADCTransformerConfig):
        super().__init__(config)
        self.embeddings = TimeSeriesEmbedding(config)
        self.blocks = nn.ModuleList([EADCBlock(config, i) for i in range(config.num_blocks)])
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    def forward(self, past_values=None, attention_mask=None, **kwargs) -> BaseModelOutput:
        """
        Args:
            past_values: [B, T, C] float, T <= `context_length`, standardised; no NaN (fill missing values first,
                e.g. with `ea_hf.time_series.pad_batch`).
            attention_mask: [B, T], 1 at real time steps and 0 at padding (at the end of shorter series).
        """
        check_past_values(past_values, self.config)
        padding_mask = padding_mask_from(attention_mask, past_values.shape[:2], "attention_mask")
        hidden_states = self.embeddings(past_values)
        logits = None
        for block in self.blocks:
            hidden_states, logits = block(hidden_states, logits, padding_mask)
        return BaseModelOutput(last_hidden_state=hidden_states)


def check_past_values(past_values: torch.Tensor | None, config: EADCTransformerConfig) -> None:
    """Raise a clear error unless `past_values` is a finite float [B, T, num_channels] tensor with T <= context."""
    if past_values is None:
        raise ValueError("You have to specify past_values [batch, time, channels].")
    if not past_values.is_floating_point():
        raise TypeError(f"past_values must be a float tensor, got {past_values.dtype}.")
    if past_values.dim() != 3 or past_values.shape[2] != config.num_channels:
        raise ValueError(
            f"past_values must have shape [batch, time, {config.num_channels} channels], got "
            f"{tuple(past_values.shape)}."
        )
    if past_values.shape[1] > config.context_length:
        raise ValueError(
            f"The series have {past_values.shape[1]} time steps, more than context_length = {config.context_length}: "
            "build the model with a larger context_length."
        )
    if not is_tracing() and not torch.isfinite(past_values).all():  # reads the values: eager only
        raise ValueError("past_values holds NaN or inf: fill missing values first (`ea_hf.time_series.pad_batch`).")


class EADCTransformerHead(EADCTransformerPreTrainedModel):
    """The authors' head: activation, dropout, zeros at padding, the whole [context_length, d_model] representation
    flattened into one Linear layer. Subclasses set the loss (and the TST baseline its `base_model_class`)."""

    base_model_class = EADCTransformerModel

    def __init__(self, config: EADCTransformerConfig):
        super().__init__(config)
        self.model = self.base_model_class(config)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.context_length * config.d_model, config.num_labels)
        self.post_init()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @can_return_tuple
    def forward(self, past_values=None, attention_mask=None, labels=None, **kwargs) -> SequenceClassifierOutput:
        """past_values [B, T, C], attention_mask [B, T]; labels [B] class indices (classification) or [B] / [B,
        num_labels] targets (regression). Returns logits [B, num_labels]."""
        outputs = self.model(past_values, attention_mask=attention_mask, **kwargs)
        hidden_states = self.dropout(F.gelu(outputs.last_hidden_state))
        if attention_mask is not None:
            hidden_states = hidden_states * attention_mask[..., None].to(hidden_states.dtype)
        padding = self.config.context_length - hidden_states.shape[1]
        logits = self.head(F.pad(hidden_states, (0, 0, 0, padding)).flatten(1))
        loss = self.loss(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class EADCTransformerForTimeSeriesClassification(EADCTransformerHead):
    """EA-DC-Transformer with the flattening classification head; cross-entropy loss."""

    def loss(self, logits, labels):
        return F.cross_entropy(logits, labels.long())


class EADCTransformerForTimeSeriesRegression(EADCTransformerHead):
    """EA-DC-Transformer with the flattening regression head (`num_labels` targets); mean squared error loss."""

    def loss(self, logits, labels):
        return F.mse_loss(logits, labels.to(logits.dtype).view_as(logits))


__all__ = [
    "EADCTransformerForTimeSeriesClassification",
    "EADCTransformerForTimeSeriesRegression",
    "EADCTransformerModel",
    "EADCTransformerPreTrainedModel",
]
