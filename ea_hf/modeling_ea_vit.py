"""EA-ViT: transformers' ViT with one evolving-attention chain through the encoder, over the patch tokens and CLS.

Only the attention, the layer and the model's forward differ from transformers' ViT: they evolve the logits, hand them
layer to layer, pass the patch grid to the 2-D grid conv (`ea_conv="grid"`), and check the pixel values. Embeddings
(with `interpolate_pos_encoding`), MLP, the heads and their forward passes are transformers' own, and parameter names
are ViT's, so vanilla ViT checkpoints load with only the EA convolutions new: the current names (`layers.N.attention.
q_proj`, ...) and the older ones most Hub checkpoints carry (`encoder.layer.N.attention.attention.query`, ...),
through the same renamings transformers registers for `ViTModel`, registered here for `EAViTModel`.
"""

import torch
from torch import nn
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.vit.modeling_vit import (
    ViTAttention,
    ViTEmbeddings,
    ViTForImageClassification,
    ViTForMaskedImageModeling,
    ViTMLP,
    ViTPooler,
    ViTPreTrainedModel,
)
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_ea_vit import EAViTConfig
from .evolving_attention import EAPreTrainedMixin, EvolvingAttentionStep, evolving_attention_forward, padding_mask_from


# Old-format ViT checkpoints (`encoder.layer.N.attention.attention.query`, ...) load through transformers' own
# renamings, which it applies to `ViTModel` only; the reverse renaming is applied on save, as for ViT.
register_checkpoint_conversion_mapping("EAViTModel", get_checkpoint_conversion_mapping("ViTModel"), overwrite=True)


class EAViTAttention(ViTAttention):
    """ViT attention (same `q_proj`, `k_proj`, `v_proj`, `o_proj`) whose logits evolve."""

    def __init__(self, config: EAViTConfig, layer_idx: int):
        super().__init__(config)
        # the chain's first layer has no predecessor: E_0 = S_0, no EA step
        self.evolving_attention = (
            EvolvingAttentionStep(config, config.num_attention_heads) if config.ea_encoder and layer_idx > 0 else None
        )

    def forward(self, hidden_states, previous_logits=None, padding_mask=None, grid_size=None):
        """
        Args:
            hidden_states: [B, N, D] with N = 1 + h * w (CLS, then the patches in raster order).
            previous_logits: [B, H, N, N], the previous layer's evolved logits, or None.
            padding_mask: [B, N] bool, True at real tokens; None when none is masked.
            grid_size: (h, w), the patch grid.
        Returns:
            output [B, N, D], probabilities [B, H, N, N], evolved logits [B, H, N, N].
        """
        hidden_shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        output, probabilities, logits, _ = evolving_attention_forward(
            query,
            key,
            value,
            self.evolving_attention,
            previous_logits,
            scaling=self.scaling,
            query_mask=padding_mask,
            key_mask=padding_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            grid_size=grid_size,
        )
        return self.o_proj(output.reshape(*hidden_states.shape[:-1], -1)), probabilities, logits


# Adapted from transformers.models.vit.modeling_vit.ViTLayer
class EAViTLayer(GradientCheckpointingLayer):
    """A pre-norm ViT layer that takes the previous layer's evolved logits and returns its own."""

    def __init__(self, config: EAViTConfig, layer_idx: int):
        super().__init__()
        self.attention = EAViTAttention(config, layer_idx)
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = ViTMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, previous_logits=None, padding_mask=None, grid_size=None):
        """hidden_states [B, N, D], previous_logits [B, H, N, N]. Returns hidden states and evolved logits."""
        attention_output, _, logits = self.attention(
            self.layernorm_before(hidden_states), previous_logits, padding_mask, grid_size
        )
        hidden_states = hidden_states + self.dropout(attention_output)
        hidden_states = hidden_states + self.dropout(self.mlp(self.layernorm_after(hidden_states)))
        return hidden_states, logits


class EAViTPreTrainedModel(EAPreTrainedMixin, ViTPreTrainedModel):
    config: EAViTConfig
    config_class = EAViTConfig
    _no_split_modules = ["ViTEmbeddings", "EAViTLayer"]
    _can_compile_fullgraph = False
    _can_record_outputs = {"hidden_states": EAViTLayer, "attentions": OutputRecorder(EAViTAttention, index=1)}


def check_pixel_values(pixel_values: torch.Tensor | None, num_channels: int) -> None:
    """Raise a clear error unless `pixel_values` is a float [B, num_channels, height, width] tensor."""
    if pixel_values is None:
        raise ValueError("You have to specify pixel_values")
    if not pixel_values.is_floating_point():
        raise TypeError(
            f"pixel_values must be a float tensor (normalised by the image processor), got {pixel_values.dtype}: "
            "pass images through `AutoImageProcessor` rather than raw uint8 pixels."
        )
    if pixel_values.dim() != 4 or pixel_values.shape[1] != num_channels:
        raise ValueError(
            f"pixel_values must have shape [batch, {num_channels} channels, height, width], got "
            f"{tuple(pixel_values.shape)}."
        )


class EAViTModel(EAViTPreTrainedModel):
    """ViT encoder with evolving attention. Inputs and outputs as `ViTModel`."""

    def __init__(self, config: EAViTConfig, add_pooling_layer: bool = True, use_mask_token: bool = False):
        super().__init__(config)
        self.embeddings = ViTEmbeddings(config, use_mask_token=use_mask_token)
        self.layers = nn.ModuleList([EAViTLayer(config, i) for i in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = ViTPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.BoolTensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """
        Args:
            pixel_values: [B, C, height, width], float, as the image processor makes them.
            bool_masked_pos: [B, h * w], True at patches replaced by the mask token (masked image modeling).
            interpolate_pos_encoding: interpolate the position embeddings to another image size.
            attention_mask: [B, 1 + h * w], 1 at tokens to attend to (none masked by default).
        """
        check_pixel_values(pixel_values, self.config.num_channels)
        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)
        patch_height, patch_width = self.embeddings.patch_embeddings.patch_size
        grid_size = (pixel_values.shape[2] // patch_height, pixel_values.shape[3] // patch_width)
        hidden_states = self.embeddings(
            pixel_values, bool_masked_pos=bool_masked_pos, interpolate_pos_encoding=interpolate_pos_encoding
        )
        padding_mask = padding_mask_from(attention_mask, hidden_states.shape[:2], "attention_mask")
        logits = None
        for layer in self.layers:
            hidden_states, logits = layer(hidden_states, logits, padding_mask, grid_size)
        sequence_output = self.layernorm(hidden_states)
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=sequence_output, pooler_output=pooled_output)


# The heads build an EAViTModel where transformers' build a ViTModel; their forward passes are transformers' own.


class EAViTForImageClassification(EAViTPreTrainedModel):
    def __init__(self, config: EAViTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = EAViTModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    forward = ViTForImageClassification.forward


class EAViTForMaskedImageModeling(EAViTPreTrainedModel):
    def __init__(self, config: EAViTConfig):
        super().__init__(config)
        self.vit = EAViTModel(config, add_pooling_layer=False, use_mask_token=True)
        self.decoder = nn.Sequential(
            nn.Conv2d(config.hidden_size, config.encoder_stride**2 * config.num_channels, kernel_size=1),
            nn.PixelShuffle(config.encoder_stride),
        )
        self.post_init()

    forward = ViTForMaskedImageModeling.forward


__all__ = ["EAViTForImageClassification", "EAViTForMaskedImageModeling", "EAViTModel", "EAViTPreTrainedModel"]
