"""EA-BERT configuration: transformers' `BertConfig` plus the evolving-attention fields."""

from huggingface_hub.dataclasses import strict
from transformers import BertConfig

from .configuration_evolving_attention import EAEncoderConfigMixin


@strict
class EABertConfig(EAEncoderConfigMixin, BertConfig):
    r"""
    Every `BertConfig` field, plus the EA fields of `EAEncoderConfigMixin` (`ea_alpha`, `ea_beta`, `ea_kernel_size`,
    `ea_activation`, `ea_encoder`).

    Loading a vanilla BERT config (`model_type: "bert"`) with `EABertConfig.from_pretrained` converts it, with these
    defaults (or overrides passed as keyword arguments).

    The defaults were measured on the validation split of the `make demo` task (all-MiniLM-L6-v2 fine-tuned on Rotten
    Tomatoes, one epoch, one seed): alpha = beta = 0.1 gave 0.801 against 0.802 for vanilla, alpha = beta = 0.5 gave
    0.752. The authors publish no values for BERT.
    """

    model_type = "ea_bert"
    host_model_type = "bert"
    default_auto_map = {
        "AutoConfig": "configuration_ea_bert.EABertConfig",
        "AutoModel": "modeling_ea_bert.EABertModel",
        "AutoModelForMaskedLM": "modeling_ea_bert.EABertForMaskedLM",
        "AutoModelForSequenceClassification": "modeling_ea_bert.EABertForSequenceClassification",
        "AutoModelForTokenClassification": "modeling_ea_bert.EABertForTokenClassification",
        "AutoModelForQuestionAnswering": "modeling_ea_bert.EABertForQuestionAnswering",
        "AutoModelForMultipleChoice": "modeling_ea_bert.EABertForMultipleChoice",
    }


__all__ = ["EABertConfig"]
