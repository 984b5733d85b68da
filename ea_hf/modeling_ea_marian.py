"""EA-Marian: transformers' Marian with evolving attention in three chains (encoder self-attention, decoder causal
self-attention, decoder cross-attention), each switchable in the config.

Only the attention, the encoder and decoder layers and the encoder and decoder differ from transformers' Marian: they
evolve the logits, hand them layer to layer, keep the rows the decoder's query-causal conv needs in an
`EvolvingAttentionCache`, take padding masks (not 4-D additive masks), and refuse inputs longer than the position
table with a clear error. Sinusoidal positions, the models' forward passes and the resizing helpers are transformers'
own, and parameter names are Marian's, so vanilla Marian checkpoints load with only the EA convolutions new.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.generation import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPastAndCrossAttentions
from transformers.models.marian.modeling_marian import (
    MarianAttention,
    MarianModel,
    MarianMTModel,
    MarianPreTrainedModel,
    MarianSinusoidalPositionalEmbedding,
)
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_ea_marian import EAMarianConfig
from .evolving_attention import (
    EAPreTrainedMixin,
    EvolvingAttentionCache,
    EvolvingAttentionStep,
    check_token_ids,
    decoder_cache_and_masks,
    evolving_attention_forward,
    padding_mask_from,
)


class EAMarianAttention(MarianAttention):
    """Marian attention (same `q_proj`, `k_proj`, `v_proj`, `out_proj` and scaling) whose logits evolve."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, is_decoder=False, is_causal=False, config=None,
                 layer_idx=None, evolve=False):  # fmt: skip
        super().__init__(embed_dim, num_heads, dropout, is_decoder, True, is_causal, config, layer_idx)
        # decoder maps, self and cross, have decoder rows: their conv must not read later rows
        self.evolving_attention = (
            EvolvingAttentionStep(config, num_heads, causal=is_causal, query_causal=is_decoder) if evolve else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        previous_logits: torch.Tensor | None = None,
        query_mask: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        cache: EvolvingAttentionCache | None = None,
    ):
        """
        Args:
            hidden_states: [B, Q, d_model]; key_value_states: [B, K, d_model] for cross-attention, else None.
            previous_logits: [B, H, Q, K], the previous layer's evolved logits of this chain.
            query_mask, key_mask: [B, Q], [B, K] bool, True at real tokens.
        Returns:
            output [B, Q, d_model], probabilities [B, H, Q, K], evolved logits [B, H, Q, K].
        """
        batch_size, num_queries = hidden_states.shape[:2]
        is_cross_attention = key_value_states is not None
        shape = (batch_size, -1, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        source = key_value_states if is_cross_attention else hidden_states

        def project():
            return self.k_proj(source).view(shape).transpose(1, 2), self.v_proj(source).view(shape).transpose(1, 2)

        key, value = project() if cache is None else cache.keys_and_values(self.layer_idx, is_cross_attention, project)

        rows_key = (self.layer_idx, is_cross_attention)
        output, probabilities, logits, rows = evolving_attention_forward(
            query,
            key,
            value,
            self.evolving_attention,
            previous_logits,
            scaling=self.scaling,
            query_mask=query_mask,
            key_mask=key_mask,
            causal=self.is_causal,
            dropout=self.dropout if self.training else 0.0,
            past_rows=cache.ea_rows.get(rows_key) if cache is not None else None,
            use_cache=cache is not None,
        )
        if rows is not None:
            cache.ea_rows[rows_key] = rows
        return self.out_proj(output.reshape(batch_size, num_queries, -1)), probabilities, logits


def feed_forward(layer: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """Marian's post-norm feed-forward sub-layer of `layer` (`fc1`, activation, `fc2`, residual, `final_layer_norm`)
    on hidden states [B, L, d_model]."""
    residual = hidden_states
    hidden_states = layer.activation_fn(layer.fc1(hidden_states))
    hidden_states = F.dropout(hidden_states, p=layer.activation_dropout, training=layer.training)
    hidden_states = F.dropout(layer.fc2(hidden_states), p=layer.dropout, training=layer.training)
    return layer.final_layer_norm(residual + hidden_states)


# Adapted from transformers.models.marian.modeling_marian.MarianEncoderLayer
class EAMarianEncoderLayer(GradientCheckpointingLayer):
    """A Marian encoder layer that takes the previous layer's evolved logits and returns its own. Tensors that need
    gradients are positional arguments, so that gradient checkpointing recomputes the layer from them."""

    def __init__(self, config: EAMarianConfig, layer_idx: int):
        super().__init__()
        self.embed_dim = config.d_model
        # a chain's first layer has no predecessor: E_0 = S_0, no EA step
        self.self_attn = EAMarianAttention(
            self.embed_dim,
            config.encoder_attention_heads,
            dropout=config.attention_dropout,
            config=config,
            layer_idx=layer_idx,
            evolve=config.ea_encoder and layer_idx > 0,
        )
        self.self_attn_layer_norm = nn.LayerNorm(self.embed_dim)
        self.dropout = config.dropout
        self.activation_fn = ACT2FN[config.activation_function]
        self.activation_dropout = config.activation_dropout
        self.fc1 = nn.Linear(self.embed_dim, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, self.embed_dim)
        self.final_layer_norm = nn.LayerNorm(self.embed_dim)

    def forward(self, hidden_states, previous_logits=None, padding_mask=None):
        """hidden_states [B, L, d_model], previous_logits [B, H, L, L], padding_mask [B, L] (True at real tokens).
        Returns hidden states and evolved logits."""
        residual = hidden_states
        hidden_states, _, logits = self.self_attn(hidden_states, None, previous_logits, padding_mask, padding_mask)
        hidden_states = F.dropout(hidden_states, p=self.dropout, training=self.training)
        hidden_states = self.self_attn_layer_norm(residual + hidden_states)
        hidden_states = feed_forward(self, hidden_states)
        if hidden_states.dtype == torch.float16 and not torch.isfinite(hidden_states).all():
            clamp_value = torch.finfo(hidden_states.dtype).max - 1000
            hidden_states = torch.clamp(hidden_states, min=-clamp_value, max=clamp_value)
        return hidden_states, logits


# Adapted from transformers.models.marian.modeling_marian.MarianDecoderLayer
class EAMarianDecoderLayer(GradientCheckpointingLayer):
    """A Marian decoder layer that takes each chain's previous evolved logits (self and cross) and returns its own."""

    def __init__(self, config: EAMarianConfig, layer_idx: int):
        super().__init__()
        self.embed_dim = config.d_model
        self.self_attn = EAMarianAttention(
            self.embed_dim,
            config.decoder_attention_heads,
            dropout=config.attention_dropout,
            is_decoder=True,
            is_causal=True,
            config=config,
            layer_idx=layer_idx,
            evolve=config.ea_decoder and layer_idx > 0,
        )
        self.dropout = config.dropout
        self.activation_fn = ACT2FN[config.activation_function]
        self.activation_dropout = config.activation_dropout
        self.self_attn_layer_norm = nn.LayerNorm(self.embed_dim)
        self.encoder_attn = EAMarianAttention(
            self.embed_dim,
            config.decoder_attention_heads,
            dropout=config.attention_dropout,
            is_decoder=True,
            config=config,
            layer_idx=layer_idx,
            evolve=config.ea_cross_attention and layer_idx > 0,
        )
        self.encoder_attn_layer_norm = nn.LayerNorm(self.embed_dim)
        self.fc1 = nn.Linear(self.embed_dim, config.decoder_ffn_dim)
        self.fc2 = nn.Linear(config.decoder_ffn_dim, self.embed_dim)
        self.final_layer_norm = nn.LayerNorm(self.embed_dim)

    def forward(
        self,
        hidden_states,
        previous_logits=None,
        encoder_hidden_states=None,
        previous_cross_logits=None,
        query_mask=None,
        key_mask=None,
        encoder_mask=None,
        cache=None,
    ):
        """hidden_states [B, Q, d_model], encoder_hidden_states [B, S, d_model], previous logits [B, H, Q, past + Q]
        and [B, H, Q, S]; masks [B, Q], [B, past + Q], [B, S]. Returns hidden states, self-attention and
        cross-attention evolved logits (None without encoder states)."""
        residual = hidden_states
        hidden_states, _, logits = self.self_attn(hidden_states, None, previous_logits, query_mask, key_mask, cache)
        hidden_states = F.dropout(hidden_states, p=self.dropout, training=self.training)
        hidden_states = self.self_attn_layer_norm(residual + hidden_states)
        cross_logits = None
        if encoder_hidden_states is not None:
            residual = hidden_states
            hidden_states, _, cross_logits = self.encoder_attn(
                hidden_states, encoder_hidden_states, previous_cross_logits, query_mask, encoder_mask, cache
            )
            hidden_states = F.dropout(hidden_states, p=self.dropout, training=self.training)
            hidden_states = self.encoder_attn_layer_norm(residual + hidden_states)
        return feed_forward(self, hidden_states), logits, cross_logits


class EAMarianPreTrainedModel(EAPreTrainedMixin, MarianPreTrainedModel):
    config: EAMarianConfig
    config_class = EAMarianConfig
    _no_split_modules = ["EAMarianEncoderLayer", "EAMarianDecoderLayer"]
    _can_compile_fullgraph = False

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, EAMarianMTModel):
            init.zeros_(module.final_logits_bias)


def check_positions(config: EAMarianConfig, past_length: int, length: int, name: str) -> None:
    """Raise a `ValueError` when positions [past_length, past_length + length) run past the sinusoidal table."""
    if past_length + length > config.max_position_embeddings:
        cached = f" after {past_length} cached positions" if past_length else ""
        raise ValueError(
            f"{name} has {length} positions{cached}, more than the {config.max_position_embeddings} of the position "
            "table (`config.max_position_embeddings`): shorten or truncate the input."
        )


class EAMarianEncoder(EAMarianPreTrainedModel):
    """Embeddings (scaled tokens plus sinusoidal positions) and the EA encoder layers."""

    _can_record_outputs = {
        "hidden_states": EAMarianEncoderLayer,
        "attentions": OutputRecorder(EAMarianAttention, index=1),
    }

    def __init__(self, config: EAMarianConfig):
        super().__init__(config)
        self.dropout = config.dropout
        self.layerdrop = config.encoder_layerdrop
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.embed_positions = MarianSinusoidalPositionalEmbedding(config.max_position_embeddings, config.d_model)
        self.layers = nn.ModuleList([EAMarianEncoderLayer(config, i) for i in range(config.encoder_layers)])
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs) -> BaseModelOutput:
        """input_ids [B, S] (or inputs_embeds [B, S, d_model], not scaled); attention_mask [B, S], 1 at real tokens."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            check_token_ids(input_ids, self.config.vocab_size)
            inputs_embeds = self.embed_tokens(input_ids) * self.embed_scale
        batch_size, length = inputs_embeds.shape[:2]
        check_positions(self.config, 0, length, "The source")
        padding_mask = padding_mask_from(attention_mask, (batch_size, length), "attention_mask")

        hidden_states = inputs_embeds + self.embed_positions(inputs_embeds.shape[:-1])
        hidden_states = F.dropout(hidden_states, p=self.dropout, training=self.training)
        logits = None
        for layer in self.layers:
            if self.training and self.layerdrop > 0.0 and torch.rand([]) < self.layerdrop:
                continue  # LayerDrop: the chain goes on with the last layer's logits
            hidden_states, logits = layer(hidden_states, logits, padding_mask=padding_mask)
        return BaseModelOutput(last_hidden_state=hidden_states)


class EAMarianDecoder(EAMarianPreTrainedModel):
    """Embeddings (scaled tokens plus sinusoidal positions after the cached ones) and the EA decoder layers."""

    _can_record_outputs = {
        "hidden_states": EAMarianDecoderLayer,
        "attentions": OutputRecorder(EAMarianAttention, index=1, layer_name="self_attn"),
        "cross_attentions": OutputRecorder(EAMarianAttention, index=1, layer_name="encoder_attn"),
    }

    def __init__(self, config: EAMarianConfig):
        super().__init__(config)
        self.dropout = config.dropout
        self.layerdrop = config.decoder_layerdrop
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(config.decoder_vocab_size, config.d_model, config.pad_token_id)
        self.embed_positions = MarianSinusoidalPositionalEmbedding(config.max_position_embeddings, config.d_model)
        self.layers = nn.ModuleList([EAMarianDecoderLayer(config, i) for i in range(config.decoder_layers)])
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        cache=None,
        inputs_embeds=None,
        use_cache=None,
        **kwargs,
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        """
        Args:
            input_ids: [B, L] (or `inputs_embeds` [B, L, d_model]); attention_mask: [B, past + L], 1 at real tokens.
            encoder_hidden_states: [B, S, d_model] and encoder_attention_mask [B, S].
            cache: an `EvolvingAttentionCache` (an empty `EncoderDecoderCache`, as `generate()` makes, is adopted).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of decoder_input_ids or decoder_inputs_embeds")
        if inputs_embeds is None:
            check_token_ids(input_ids, self.config.decoder_vocab_size, "decoder_input_ids")
            inputs_embeds = self.embed_tokens(input_ids)
        inputs_embeds = inputs_embeds * self.embed_scale  # as Marian: embeddings passed in are scaled too
        batch_size, length = inputs_embeds.shape[:2]
        cache, past_length, query_mask, key_mask, encoder_mask = decoder_cache_and_masks(
            cache,
            use_cache,
            self.config.decoder_attention_heads,
            (batch_size, length),
            attention_mask,
            encoder_hidden_states,
            encoder_attention_mask,
        )
        check_positions(self.config, past_length, length, "The decoder input")

        hidden_states = inputs_embeds + self.embed_positions((batch_size, length), past_length)
        hidden_states = F.dropout(hidden_states, p=self.dropout, training=self.training)
        logits = cross_logits = None
        for layer in self.layers:
            if self.training and self.layerdrop > 0.0 and torch.rand([]) < self.layerdrop:
                continue  # LayerDrop: the chains go on with the last layer's logits
            hidden_states, logits, cross_logits = layer(
                hidden_states,
                logits,
                encoder_hidden_states,
                cross_logits,
                query_mask=query_mask,
                key_mask=key_mask,
                encoder_mask=encoder_mask,
                cache=cache,
            )
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=hidden_states, cache=cache)


# The models below build EA encoders and decoders where transformers' Marian builds its own; their forward passes
# are transformers' own.


class EAMarianModel(EAMarianPreTrainedModel):
    _keys_to_ignore_on_load_missing = MarianModel._keys_to_ignore_on_load_missing

    def __init__(self, config: EAMarianConfig):
        super().__init__(config)
        if config.share_encoder_decoder_embeddings:
            self.shared = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
            self._tied_weights_keys = {
                "decoder.embed_tokens.weight": "shared.weight",
                "encoder.embed_tokens.weight": "shared.weight",
            }
        else:
            self._tied_weights_keys = None
        self.encoder = EAMarianEncoder(config)
        self.decoder = EAMarianDecoder(config)
        self.post_init()

    get_input_embeddings = MarianModel.get_input_embeddings
    set_input_embeddings = MarianModel.set_input_embeddings
    get_decoder_input_embeddings = MarianModel.get_decoder_input_embeddings
    set_decoder_input_embeddings = MarianModel.set_decoder_input_embeddings
    resize_decoder_token_embeddings = MarianModel.resize_decoder_token_embeddings
    forward = MarianModel.forward


class EAMarianMTModel(EAMarianPreTrainedModel, GenerationMixin):
    base_model_prefix = "model"
    _keys_to_ignore_on_load_missing = MarianMTModel._keys_to_ignore_on_load_missing
    _keys_to_ignore_on_save = MarianMTModel._keys_to_ignore_on_save
    _tied_weights_keys = MarianMTModel._tied_weights_keys

    def __init__(self, config: EAMarianConfig):
        super().__init__(config)
        self.model = EAMarianModel(config)
        if config.share_encoder_decoder_embeddings:
            self._tied_weights_keys = {
                "lm_head.weight": "model.shared.weight",
                "model.decoder.embed_tokens.weight": "model.shared.weight",
                "model.encoder.embed_tokens.weight": "model.shared.weight",
            }
        target_vocab_size = config.vocab_size if config.share_encoder_decoder_embeddings else config.decoder_vocab_size
        self.final_logits_bias = nn.Buffer(torch.zeros((1, target_vocab_size)))
        self.lm_head = nn.Linear(config.d_model, target_vocab_size, bias=False)
        self.post_init()

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """As `MarianMTModel.resize_token_embeddings`: with shared embeddings, `final_logits_bias` follows."""
        new_embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        if self.config.share_encoder_decoder_embeddings:
            self._resize_final_logits_bias(new_embeddings.weight.shape[0])
        return new_embeddings

    _resize_token_embeddings = MarianMTModel._resize_token_embeddings
    resize_decoder_token_embeddings = MarianMTModel.resize_decoder_token_embeddings
    _resize_final_logits_bias = MarianMTModel._resize_final_logits_bias
    set_output_embeddings = MarianMTModel.set_output_embeddings
    forward = MarianMTModel.forward
    prepare_decoder_input_ids_from_labels = MarianMTModel.prepare_decoder_input_ids_from_labels


__all__ = ["EAMarianModel", "EAMarianMTModel", "EAMarianPreTrainedModel"]
