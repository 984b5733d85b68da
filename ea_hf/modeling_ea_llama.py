"""EA-Llama: transformers' Llama decoder with one evolving-attention chain through its causal self-attention.

The logits that evolve are the scaled dot products of the rotated (RoPE) queries and keys; future columns are zeroed
and the conv is query-causal, its channels the query heads (grouped-query attention repeats the key/value heads
first, as Llama does). Cached generation keeps the rows the conv needs in an `EvolvingAttentionDynamicCache`.

Only the attention, the decoder layer and the model's forward differ from transformers' Llama: they hand the logits
layer to layer and take a padding mask (not a 4-D additive mask). Norms, MLP, rotary embedding and the causal-LM
forward are transformers' own, and parameter names are Llama's, so vanilla Llama checkpoints load with only the EA
convolutions new. `modeling_ea_qwen2.py` builds EA-Qwen2 from these classes.
"""

import torch
from torch import nn
from transformers.generation import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, SequenceClassifierOutputWithPast
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaForCausalLM,
    LlamaMLP,
    LlamaPreTrainedModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
    repeat_kv,
)
from transformers.utils import can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_ea_llama import EALlamaConfig
from .evolving_attention import (
    EAPreTrainedMixin,
    EvolvingAttentionDynamicCache,
    EvolvingAttentionStep,
    check_token_ids,
    evolving_attention_forward,
    padding_mask_from,
)


class EvolvingSelfAttention:
    """Turns a Llama-style attention class (q/k/v/o projections, RoPE, grouped-query heads) into one whose logits
    evolve: `class EALlamaAttention(EvolvingSelfAttention, LlamaAttention)`."""

    def __init__(self, config, layer_idx: int):
        super().__init__(config, layer_idx)
        # a chain's first layer has no predecessor: E_0 = S_0, no EA step
        evolve = config.ea_decoder and layer_idx > 0
        self.evolving_attention = (
            EvolvingAttentionStep(config, config.num_attention_heads, causal=True) if evolve else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        previous_logits: torch.Tensor | None = None,
        query_mask: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        cache: EvolvingAttentionDynamicCache | None = None,
    ):
        """
        Args:
            hidden_states: [B, Q, hidden]; position_embeddings: RoPE's (cos, sin), [B, Q, head_dim] each.
            previous_logits: [B, H, Q, past + Q], the previous layer's evolved logits.
            query_mask, key_mask: [B, Q], [B, past + Q] bool, True at real tokens (None: nothing padded).
        Returns:
            output [B, Q, hidden], probabilities [B, H, Q, past + Q], evolved logits [B, H, Q, past + Q].
        """
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        query, key = apply_rotary_pos_emb(query, key, *position_embeddings)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)

        rows_key = (self.layer_idx, False)
        output, probabilities, logits, rows = evolving_attention_forward(
            query,
            repeat_kv(key, self.num_key_value_groups),
            repeat_kv(value, self.num_key_value_groups),
            self.evolving_attention,
            previous_logits,
            scaling=self.scaling,
            query_mask=query_mask,
            key_mask=key_mask,
            causal=True,
            dropout=self.attention_dropout if self.training else 0.0,
            past_rows=cache.ea_rows.get(rows_key) if cache is not None else None,
            use_cache=cache is not None,
        )
        if rows is not None:
            cache.ea_rows[rows_key] = rows
        return self.o_proj(output.reshape(*input_shape, -1)), probabilities, logits


class EALlamaAttention(EvolvingSelfAttention, LlamaAttention):
    """Llama attention (same projections, RoPE and scaling) whose logits evolve."""


# Adapted from transformers.models.llama.modeling_llama.LlamaDecoderLayer
class EALlamaDecoderLayer(GradientCheckpointingLayer):
    """A pre-norm Llama decoder layer that takes the previous layer's evolved logits and returns its own. Tensors that
    need gradients are positional arguments, so that gradient checkpointing recomputes the layer from them."""

    attention_class = EALlamaAttention
    mlp_class = LlamaMLP
    norm_class = LlamaRMSNorm

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = self.attention_class(config, layer_idx)
        self.mlp = self.mlp_class(config)
        self.input_layernorm = self.norm_class(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = self.norm_class(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self, hidden_states, previous_logits=None, position_embeddings=None, query_mask=None, key_mask=None, cache=None
    ):
        """hidden_states [B, Q, hidden], previous_logits [B, H, Q, past + Q]; masks [B, Q], [B, past + Q]. Returns
        hidden states and evolved logits."""
        residual = hidden_states
        hidden_states, _, logits = self.self_attn(
            self.input_layernorm(hidden_states), position_embeddings, previous_logits, query_mask, key_mask, cache
        )
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = residual + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states, logits


class EALlamaPreTrainedModel(EAPreTrainedMixin, LlamaPreTrainedModel):
    config: EALlamaConfig
    config_class = EALlamaConfig
    _no_split_modules = ["EALlamaDecoderLayer"]
    _can_compile_fullgraph = False
    _can_record_outputs = {
        "hidden_states": EALlamaDecoderLayer,
        "attentions": OutputRecorder(EvolvingSelfAttention, index=1),
    }


class EALlamaModel(EALlamaPreTrainedModel):
    """Token embeddings, the EA decoder layers (one EA chain through their self-attention) and the final norm."""

    layer_class = EALlamaDecoderLayer
    norm_class = LlamaRMSNorm
    rotary_class = LlamaRotaryEmbedding

    def __init__(self, config):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([self.layer_class(config, i) for i in range(config.num_hidden_layers)])
        self.norm = self.norm_class(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = self.rotary_class(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        use_cache=None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """
        Args:
            input_ids: [B, L] (or `inputs_embeds` [B, L, hidden]); attention_mask: [B, past + L], 1 at real tokens
                (left or right padding).
            position_ids: [B, L] or [1, L]; by default the positions after the cached ones (as Llama; `generate()`
                passes positions that skip left padding).
            cache: an `EvolvingAttentionDynamicCache` (an empty `DynamicCache`, as `generate()` makes, is adopted;
                static caches and caches of other models are refused).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            check_token_ids(input_ids, self.config.vocab_size)
            inputs_embeds = self.embed_tokens(input_ids)
        batch_size, length = inputs_embeds.shape[:2]
        if cache is not None or use_cache:
            cache = EvolvingAttentionDynamicCache.from_cache(cache, batch_size, self.config.num_key_value_heads)
        past_length = cache.get_seq_length() if cache is not None else 0
        key_mask = padding_mask_from(attention_mask, (batch_size, past_length + length), "attention_mask")
        query_mask = key_mask[:, past_length:] if key_mask is not None else None
        if position_ids is None:
            position_ids = (torch.arange(length, device=inputs_embeds.device) + past_length).unsqueeze(0)

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        logits = None
        for layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states, logits = layer(
                hidden_states, logits, position_embeddings, query_mask=query_mask, key_mask=key_mask, cache=cache
            )
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), cache=cache)


class EALlamaForCausalLM(EALlamaPreTrainedModel, GenerationMixin):
    """The EA decoder and Llama's LM head; forward, loss (normalised by `num_items_in_batch` under gradient
    accumulation) and generation are transformers' own."""

    base_class = EALlamaModel
    accepts_loss_kwargs = True  # a token-level loss: Trainer passes num_items_in_batch, the loss divides by it
    _tied_weights_keys = LlamaForCausalLM._tied_weights_keys

    def __init__(self, config):
        super().__init__(config)
        self.model = self.base_class(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    forward = LlamaForCausalLM.forward


class EALlamaForSequenceClassification(EALlamaPreTrainedModel):
    """The EA decoder and a linear score on the last real token of each sequence: the last position of
    `attention_mask` that is 1 (left or right padding), else, as transformers' head, the last token that is not
    `pad_token_id`."""

    base_class = EALlamaModel

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = self.base_class(config)
        self.score = nn.Linear(config.hidden_size, self.num_labels, bias=False)
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        """input_ids [B, L] (or inputs_embeds), attention_mask [B, L]; labels [B]. Returns logits [B, num_labels]."""
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        logits = self.score(outputs.last_hidden_state)
        batch_size, length = logits.shape[:2]
        positions = torch.arange(length, device=logits.device)
        if attention_mask is not None:
            last = (positions * attention_mask[:, -length:].to(logits.device, torch.long)).argmax(-1)
        elif input_ids is not None and self.config.pad_token_id is not None:
            last = (positions * (input_ids != self.config.pad_token_id).to(logits.device, torch.long)).argmax(-1)
        elif batch_size == 1 or inputs_embeds is not None:
            last = torch.full((batch_size,), length - 1, device=logits.device)
        else:
            raise ValueError("Cannot find the last token of a batch without attention_mask or config.pad_token_id.")
        pooled_logits = logits[torch.arange(batch_size, device=logits.device), last]
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, pooled_logits=pooled_logits, config=self.config)
        return SequenceClassifierOutputWithPast(
            loss=loss,
            logits=pooled_logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = [
    "EALlamaForCausalLM",
    "EALlamaForSequenceClassification",
    "EALlamaModel",
    "EALlamaPreTrainedModel",
]
