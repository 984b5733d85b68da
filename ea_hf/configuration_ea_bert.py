"""EA-BERT configuration: transformers' `BertConfig` plus the evolving-attention fields."""

from huggingface_hub.dataclasses import strict
from transformers import BertConfig

from .evolving_attention import EAConfigMixin


@strict
class EABertConfig(EAConfigMixin, BertConfig):
    r"""
    Every `BertConfig` field, plus:

    ea_alpha (`float`, defaults to 0.1):
        Weight of the convolution branch: `E = alpha * act(conv(M)) + (1 - alpha) * M`.
    ea_beta (`float`, defaults to 0.1):
        Weight of the previous layer's map: `M = (1 - beta) * S + beta * E_prev`.
    ea_kernel_size (`int`, defaults to 3):
        Odd kernel size of the Conv2d over the (query, key) plane.
    ea_activation (`str`, defaults to `"relu"`):
        Activation of the convolution branch: `"relu"`, `"leaky_relu"`, `"gelu"` or `"identity"`.
    ea_encoder (`bool`, defaults to `True`):
        Evolve the attention maps through the encoder's self-attention layers. With `False` (or
        `ea_alpha = ea_beta = 0`) the model computes exactly what `BertModel` computes.

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

    ea_alpha: float | int = 0.1
    ea_beta: float | int = 0.1
    ea_kernel_size: int = 3
    ea_activation: str = "relu"
    ea_encoder: bool = True


__all__ = ["EABertConfig"]
