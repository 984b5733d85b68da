"""EA-Qwen2: transformers' Qwen2 decoder with one evolving-attention chain through its causal self-attention.

Qwen2's decoder is Llama's with biases on the q/k/v projections (none on the output projection and the MLP): EA-Qwen2
is EA-Llama (`modeling_ea_llama.py`) built from Qwen2's attention, MLP and norms, so parameter names are Qwen2's and
vanilla Qwen2 checkpoints load with only the EA convolutions new. Sliding-window attention is refused.
"""

from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2Attention,
    Qwen2ForCausalLM,
    Qwen2MLP,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
)

from .configuration_ea_qwen2 import EAQwen2Config
from .modeling_ea_llama import (
    EALlamaDecoderLayer,
    EALlamaForCausalLM,
    EALlamaForSequenceClassification,
    EALlamaModel,
    EALlamaPreTrainedModel,
    EvolvingSelfAttention,
)


class EAQwen2Attention(EvolvingSelfAttention, Qwen2Attention):
    """Qwen2 attention (q/k/v biases, RoPE, grouped-query heads) whose logits evolve."""


class EAQwen2DecoderLayer(EALlamaDecoderLayer):
    attention_class = EAQwen2Attention
    mlp_class = Qwen2MLP
    norm_class = Qwen2RMSNorm


class EAQwen2PreTrainedModel(EALlamaPreTrainedModel):
    config: EAQwen2Config
    config_class = EAQwen2Config
    _no_split_modules = ["EAQwen2DecoderLayer"]


class EAQwen2Model(EAQwen2PreTrainedModel, EALlamaModel):
    layer_class = EAQwen2DecoderLayer
    norm_class = Qwen2RMSNorm
    rotary_class = Qwen2RotaryEmbedding

    def __init__(self, config: EAQwen2Config):
        config.check_full_attention()
        super().__init__(config)


class EAQwen2ForCausalLM(EAQwen2PreTrainedModel, EALlamaForCausalLM):
    base_class = EAQwen2Model
    _tied_weights_keys = Qwen2ForCausalLM._tied_weights_keys


class EAQwen2ForSequenceClassification(EAQwen2PreTrainedModel, EALlamaForSequenceClassification):
    base_class = EAQwen2Model


__all__ = [
    "EAQwen2ForCausalLM",
    "EAQwen2ForSequenceClassification",
    "EAQwen2Model",
    "EAQwen2PreTrainedModel",
]
