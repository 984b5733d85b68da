"""EA-Llama configuration: transformers' `LlamaConfig` plus the evolving-attention fields."""

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig

from .configuration_evolving_attention import EAConfigMixin


@strict
class EALlamaConfig(EAConfigMixin, LlamaConfig):
    r"""
    Every `LlamaConfig` field, plus the EA fields of `EAConfigMixin` (`ea_alpha`, `ea_beta`, `ea_kernel_size`,
    `ea_activation`) and:

    ea_decoder (`bool`, defaults to `True`):
        Evolve the causal self-attention maps from layer to layer: the logits after RoPE, future columns zeroed, a
        query-causal conv whose channels are the query heads (also with grouped-query attention).

    With `ea_decoder=False` (or `ea_alpha = ea_beta = 0`) the model computes exactly what `LlamaForCausalLM`
    computes. The alpha/beta defaults are those of EA-BERT (see `EABertConfig`); no published work gives values for
    decoder-only models.
    """

    model_type = "ea_llama"
    host_model_type = "llama"
    default_auto_map = {
        "AutoConfig": "configuration_ea_llama.EALlamaConfig",
        "AutoModel": "modeling_ea_llama.EALlamaModel",
        "AutoModelForCausalLM": "modeling_ea_llama.EALlamaForCausalLM",
        "AutoModelForSequenceClassification": "modeling_ea_llama.EALlamaForSequenceClassification",
    }

    ea_decoder: bool = True


__all__ = ["EALlamaConfig"]
