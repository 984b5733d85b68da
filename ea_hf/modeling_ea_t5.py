"""EA-T5: transformers' T5 with evolving attention in three chains (encoder self-attention, decoder causal
self-attention, decoder cross-attention), each switchable in the config.

Only the attention, its two sub-layers, the block and the stack differ from transformers' T5: they evolve the logits
(relative position bias included), hand them block to block, and keep the rows the decoder's query-causal conv needs in
an `EvolvingAttentionCache`. Norms, feed-forward, relative bias and the models' forward passes are transformers' own,
and parameter names are T5's, so vanilla T5 checkpoints load with only the EA convolutions new.
"""

import copy

import torch
from torch import nn
from transformers.generation import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions
from transformers.models.t5.modeling_t5 import (
    T5Attention,
    T5EncoderModel,
    T5ForConditionalGeneration,
    T5LayerFF,
    T5LayerNorm,
    T5Model,
    T5PreTrainedModel,
)
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_ea_t5 import EAT5Config
from .evolving_attention import (
    EAPreTrainedMixin,
    EvolvingAttentionCache,
    EvolvingAttentionStep,
    check_token_ids,
    decoder_cache_and_masks,
    evolving_attention_forward,
)


class EAT5Attention(T5Attention):
    """T5 attention (same `q`, `k`, `v`, `o` and relative bias) whose logits, position bias included, evolve."""

    def __init__(self, config, has_relative_attention_bias=False, layer_idx=None, is_causal=False, evolve=False):
        super().__init__(config, has_relative_attention_bias, layer_idx=layer_idx, is_causal=is_causal)
        # decoder maps, self and cross, have decoder rows: their conv must not read later rows
        self.evolving_attention = (
            EvolvingAttentionStep(config, config.num_heads, causal=is_causal, query_causal=config.is_decoder)
            if evolve
            else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        previous_logits: torch.Tensor | None = None,
        query_mask: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        cache: EvolvingAttentionCache | None = None,
    ):
        """
        Args:
            hidden_states: [B, Q, d_model]; key_value_states: [B, K, d_model] for cross-attention, else None.
            position_bias: [1, H, Q, K] from the first block, or None (computed here when this layer owns the bias).
            previous_logits: [B, H, Q, K], the previous block's evolved logits of this chain.
            query_mask, key_mask: [B, Q], [B, K] bool, True at real tokens.
        Returns:
            output [B, Q, d_model], probabilities [B, H, Q, K], evolved logits [B, H, Q, K], position bias.
        """
        batch_size, num_queries = hidden_states.shape[:2]
        is_cross_attention = key_value_states is not None
        past_seen_tokens = cache.get_seq_length(self.layer_idx) if cache is not None else 0
        shape = (batch_size, -1, self.n_heads, self.key_value_proj_dim)
        query = self.q(hidden_states).view(shape).transpose(1, 2)
        source = key_value_states if is_cross_attention else hidden_states

        def project():
            return self.k(source).view(shape).transpose(1, 2), self.v(source).view(shape).transpose(1, 2)

        key, value = project() if cache is None else cache.keys_and_values(self.layer_idx, is_cross_attention, project)
        if position_bias is None and self.has_relative_attention_bias:
            position_bias = self.compute_bias(num_queries, key.shape[-2], query.device, past_seen_tokens)

        rows_key = (self.layer_idx, is_cross_attention)
        output, probabilities, logits, rows = evolving_attention_forward(
            query,
            key,
            value,
            self.evolving_attention,
            previous_logits,
            scaling=1.0,  # T5 does not scale the dot products
            position_bias=position_bias,
            query_mask=query_mask,
            key_mask=key_mask,
            causal=self.is_causal,
            dropout=self.dropout if self.training else 0.0,
            past_rows=cache.ea_rows.get(rows_key) if cache is not None else None,
            use_cache=cache is not None,
        )
        if rows is not None:
            cache.ea_rows[rows_key] = rows
        return self.o(output.reshape(batch_size, num_queries, -1)), probabilities, logits, position_bias


class EAT5LayerSelfAttention(nn.Module):
    def __init__(self, config, has_relative_attention_bias=False, layer_idx=None, evolve=False):
        super().__init__()
        self.SelfAttention = EAT5Attention(
            config, has_relative_attention_bias, layer_idx, is_causal=config.is_decoder, evolve=evolve
        )
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(
        self, hidden_states, position_bias=None, previous_logits=None, query_mask=None, key_mask=None, cache=None
    ):
        output, probabilities, logits, position_bias = self.SelfAttention(
            self.layer_norm(hidden_states), None, position_bias, previous_logits, query_mask, key_mask, cache
        )
        return hidden_states + self.dropout(output), probabilities, logits, position_bias


class EAT5LayerCrossAttention(nn.Module):
    def __init__(self, config, layer_idx=None, evolve=False):
        super().__init__()
        self.EncDecAttention = EAT5Attention(config, False, layer_idx, is_causal=False, evolve=evolve)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(
        self, hidden_states, key_value_states, position_bias=None, previous_logits=None, query_mask=None,
        key_mask=None, cache=None,
    ):  # fmt: skip
        output, probabilities, logits, position_bias = self.EncDecAttention(
            self.layer_norm(hidden_states),
            key_value_states,
            position_bias,
            previous_logits,
            query_mask,
            key_mask,
            cache,
        )
        return hidden_states + self.dropout(output), probabilities, logits, position_bias


def clamp_inf_for_fp16(hidden_states: torch.Tensor) -> torch.Tensor:
    """As T5Block: clamp inf values to enable fp16 training."""
    if hidden_states.dtype != torch.float16:
        return hidden_states
    max_value = torch.finfo(torch.float16).max
    clamp_value = torch.where(torch.isinf(hidden_states).any(), max_value - 1000, max_value)
    return torch.clamp(hidden_states, min=-clamp_value, max=clamp_value)


class EAT5Block(GradientCheckpointingLayer):
    """A T5 block that takes each chain's previous evolved logits and returns its own. Tensors that need gradients are
    positional arguments, so that gradient checkpointing recomputes the block from them."""

    def __init__(self, config, has_relative_attention_bias=False, layer_idx=0):
        super().__init__()
        self.is_decoder = config.is_decoder
        self_chain = config.ea_decoder if config.is_decoder else config.ea_encoder
        # a chain's first block has no predecessor: E_0 = S_0, no EA step
        self.layer = nn.ModuleList(
            [EAT5LayerSelfAttention(config, has_relative_attention_bias, layer_idx, self_chain and layer_idx > 0)]
        )
        if self.is_decoder:
            self.layer.append(EAT5LayerCrossAttention(config, layer_idx, config.ea_cross_attention and layer_idx > 0))
        self.layer.append(T5LayerFF(config))

    def forward(
        self,
        hidden_states,
        position_bias=None,
        previous_logits=None,
        encoder_hidden_states=None,
        encoder_decoder_position_bias=None,
        previous_cross_logits=None,
        query_mask=None,
        key_mask=None,
        encoder_mask=None,
        cache=None,
        **kwargs,
    ):
        """Returns hidden states, self-attention position bias and evolved logits, cross-attention position bias and
        evolved logits (None in the encoder)."""
        hidden_states, _, logits, position_bias = self.layer[0](
            hidden_states, position_bias, previous_logits, query_mask, key_mask, cache
        )
        hidden_states = clamp_inf_for_fp16(hidden_states)
        cross_logits = None
        if self.is_decoder and encoder_hidden_states is not None:
            hidden_states, _, cross_logits, encoder_decoder_position_bias = self.layer[1](
                hidden_states,
                encoder_hidden_states,
                encoder_decoder_position_bias,
                previous_cross_logits,
                query_mask,
                encoder_mask,
                cache,
            )
            hidden_states = clamp_inf_for_fp16(hidden_states)
        hidden_states = clamp_inf_for_fp16(self.layer[-1](hidden_states))
        return hidden_states, position_bias, logits, encoder_decoder_position_bias, cross_logits


class EAT5PreTrainedModel(EAPreTrainedMixin, T5PreTrainedModel):
    config: EAT5Config
    config_class = EAT5Config
    _no_split_modules = ["EAT5Block"]
    _can_compile_fullgraph = False
    _can_record_outputs = {
        "hidden_states": OutputRecorder(EAT5Block, index=0),
        "attentions": OutputRecorder(EAT5LayerSelfAttention, index=1),
        "cross_attentions": OutputRecorder(EAT5LayerCrossAttention, index=1),
    }


class EAT5Stack(EAT5PreTrainedModel):
    """The encoder or decoder stack: embeddings, EA blocks, final norm."""

    def __init__(self, config: EAT5Config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.is_decoder = config.is_decoder
        self.block = nn.ModuleList(
            [EAT5Block(config, has_relative_attention_bias=i == 0, layer_idx=i) for i in range(config.num_layers)]
        )
        self.final_layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.post_init()

    def set_input_embeddings(self, new_embeddings):
        self.embed_tokens = new_embeddings

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        inputs_embeds=None,
        cache=None,
        use_cache=None,
        **kwargs,
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        """
        Args:
            input_ids: [B, L] (or `inputs_embeds` [B, L, d_model]); attention_mask: [B, past + L], 1 at real tokens.
            encoder_hidden_states: [B, S, d_model] and encoder_attention_mask [B, S] (decoder only).
            cache: an `EvolvingAttentionCache` (an empty `EncoderDecoderCache`, as `generate()` makes, is adopted).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        prefix = "decoder_" if self.is_decoder else ""
        if inputs_embeds is None:
            check_token_ids(input_ids, self.config.vocab_size, f"{prefix}input_ids")
            inputs_embeds = self.embed_tokens(input_ids)
        cache, _, query_mask, key_mask, encoder_mask = decoder_cache_and_masks(
            cache if self.is_decoder else None,
            use_cache and self.is_decoder,
            self.config.num_heads,
            inputs_embeds.shape[:2],
            attention_mask,
            encoder_hidden_states,
            encoder_attention_mask,
            f"{prefix}attention_mask",
        )

        hidden_states = self.dropout(inputs_embeds)
        position_bias = cross_position_bias = logits = cross_logits = None
        for block in self.block:
            hidden_states, position_bias, logits, cross_position_bias, cross_logits = block(
                hidden_states,
                position_bias,
                logits,
                encoder_hidden_states,
                cross_position_bias,
                cross_logits,
                query_mask=query_mask,
                key_mask=key_mask,
                encoder_mask=encoder_mask,
                cache=cache,
            )
        hidden_states = self.dropout(self.final_layer_norm(hidden_states))
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=hidden_states, cache=cache)


def stack_config(config: EAT5Config, is_decoder: bool) -> EAT5Config:
    """The encoder's or decoder's copy of the config, as transformers' T5 makes it."""
    config = copy.deepcopy(config)
    config.is_decoder = is_decoder
    if is_decoder:
        config.num_layers = config.num_decoder_layers
    else:
        config.use_cache = False
    return config


# The models below build EA stacks where transformers' T5 builds T5Stacks; their forward passes are transformers' own.


class EAT5Model(EAT5PreTrainedModel):
    _keys_to_ignore_on_load_unexpected = T5Model._keys_to_ignore_on_load_unexpected
    _tied_weights_keys = T5Model._tied_weights_keys

    def __init__(self, config: EAT5Config):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = EAT5Stack(stack_config(config, is_decoder=False))
        self.decoder = EAT5Stack(stack_config(config, is_decoder=True))
        self.post_init()

    get_input_embeddings = T5Model.get_input_embeddings
    set_input_embeddings = T5Model.set_input_embeddings
    forward = T5Model.forward


class EAT5ForConditionalGeneration(EAT5PreTrainedModel, GenerationMixin):
    _keys_to_ignore_on_load_unexpected = T5ForConditionalGeneration._keys_to_ignore_on_load_unexpected
    _tied_weights_keys = T5ForConditionalGeneration._tied_weights_keys

    def __init__(self, config: EAT5Config):
        super().__init__(config)
        self.model_dim = config.d_model
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = EAT5Stack(stack_config(config, is_decoder=False))
        self.decoder = EAT5Stack(stack_config(config, is_decoder=True))
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    get_input_embeddings = T5ForConditionalGeneration.get_input_embeddings
    set_input_embeddings = T5ForConditionalGeneration.set_input_embeddings
    forward = T5ForConditionalGeneration.forward
    prepare_decoder_input_ids_from_labels = T5ForConditionalGeneration.prepare_decoder_input_ids_from_labels


class EAT5EncoderModel(EAT5PreTrainedModel):
    _tied_weights_keys = T5EncoderModel._tied_weights_keys
    _keys_to_ignore_on_load_unexpected = T5EncoderModel._keys_to_ignore_on_load_unexpected

    def __init__(self, config: EAT5Config):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = EAT5Stack(stack_config(config, is_decoder=False))
        self.post_init()

    get_input_embeddings = T5EncoderModel.get_input_embeddings
    set_input_embeddings = T5EncoderModel.set_input_embeddings
    forward = T5EncoderModel.forward


__all__ = ["EAT5EncoderModel", "EAT5ForConditionalGeneration", "EAT5Model", "EAT5PreTrainedModel"]
