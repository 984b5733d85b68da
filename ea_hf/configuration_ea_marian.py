"""EA-Marian configuration: transformers' `MarianConfig` plus the evolving-attention fields and one switch per
chain."""

from huggingface_hub.dataclasses import strict
from transformers import MarianConfig

from .configuration_evolving_attention import EAEncoderConfigMixin


@strict
class EAMarianConfig(EAEncoderConfigMixin, MarianConfig):
    r"""
    Every `MarianConfig` field, plus the EA fields of `EAEncoderConfigMixin` (`ea_alpha`, `ea_beta`, `ea_kernel_size`,
    `ea_activation`, `ea_encoder`: the encoder's self-attention chain) and:

    ea_decoder (`bool`, defaults to `True`):
        Evolve the decoder's (causal) self-attention maps: future columns zeroed, query-causal conv.
    ea_cross_attention (`bool`, defaults to `True`):
        Evolve the decoder's cross-attention maps (query-causal conv over decoder rows and encoder columns).

    The logits that evolve are Marian's scaled dot products (its positions are sinusoidal embeddings added to the
    inputs, so the logits carry no position term). With every chain off (or `ea_alpha = ea_beta = 0`) the model
    computes exactly what `MarianMTModel` computes. The alpha/beta defaults are those of EA-BERT (see `EABertConfig`);
    no published code gives values for Marian.
    """

    model_type = "ea_marian"
    host_model_type = "marian"
    default_auto_map = {
        "AutoConfig": "configuration_ea_marian.EAMarianConfig",
        "AutoModel": "modeling_ea_marian.EAMarianModel",
        "AutoModelForSeq2SeqLM": "modeling_ea_marian.EAMarianMTModel",
    }

    ea_decoder: bool = True
    ea_cross_attention: bool = True


__all__ = ["EAMarianConfig"]
