"""EA-T5 configuration: transformers' `T5Config` plus the evolving-attention fields and one switch per chain."""

from huggingface_hub.dataclasses import strict
from transformers import T5Config

from .configuration_evolving_attention import EAEncoderConfigMixin


@strict
class EAT5Config(EAEncoderConfigMixin, T5Config):
    r"""
    Every `T5Config` field, plus the EA fields of `EAEncoderConfigMixin` (`ea_alpha`, `ea_beta`, `ea_kernel_size`,
    `ea_activation`, `ea_encoder`: the encoder's self-attention chain) and:

    ea_decoder (`bool`, defaults to `True`):
        Evolve the decoder's (causal) self-attention maps: future columns zeroed, query-causal conv.
    ea_cross_attention (`bool`, defaults to `True`):
        Evolve the decoder's cross-attention maps (query-causal conv over decoder rows and encoder columns).

    The logits that evolve include T5's relative position bias. With every chain off (or `ea_alpha = ea_beta = 0`)
    the model computes exactly what `T5ForConditionalGeneration` computes. The alpha/beta defaults are those of EA-BERT
    (see `EABertConfig`); no published code gives values for T5.
    """

    model_type = "ea_t5"
    host_model_type = "t5"
    default_auto_map = {
        "AutoConfig": "configuration_ea_t5.EAT5Config",
        "AutoModel": "modeling_ea_t5.EAT5Model",
        "AutoModelForSeq2SeqLM": "modeling_ea_t5.EAT5ForConditionalGeneration",
        "AutoModelForTextEncoding": "modeling_ea_t5.EAT5EncoderModel",
    }

    ea_decoder: bool = True
    ea_cross_attention: bool = True


__all__ = ["EAT5Config"]
