"""EA-Qwen2 configuration: transformers' `Qwen2Config` plus the evolving-attention fields."""

from huggingface_hub.dataclasses import strict
from transformers import Qwen2Config

from .configuration_evolving_attention import EAConfigMixin


@strict
class EAQwen2Config(EAConfigMixin, Qwen2Config):
    r"""
    Every `Qwen2Config` field, plus the EA fields of `EAConfigMixin` (`ea_alpha`, `ea_beta`, `ea_kernel_size`,
    `ea_activation`) and `ea_decoder` (see `EALlamaConfig`: Qwen2 is Llama's decoder with q/k/v biases).

    Sliding-window attention (`use_sliding_window=True` with "sliding_attention" layers) is refused when a model is
    built: a
    sliding cache drops the keys whose columns the EA rows of the query-causal conv still hold. Qwen2 and Qwen2.5
    checkpoints ship with `use_sliding_window: false`.
    """

    model_type = "ea_qwen2"
    host_model_type = "qwen2"
    default_auto_map = {
        "AutoConfig": "configuration_ea_qwen2.EAQwen2Config",
        "AutoModel": "modeling_ea_qwen2.EAQwen2Model",
        "AutoModelForCausalLM": "modeling_ea_qwen2.EAQwen2ForCausalLM",
        "AutoModelForSequenceClassification": "modeling_ea_qwen2.EAQwen2ForSequenceClassification",
    }

    ea_decoder: bool = True

    def check_full_attention(self) -> None:
        """Raise a `ValueError` when a layer would slide (checked when a model is built, after `from_pretrained`'s
        overrides such as `use_sliding_window=False` are set)."""
        sliding = [i for i, kind in enumerate(self.layer_types or []) if kind == "sliding_attention"]
        if sliding and self.use_sliding_window and self.sliding_window is not None:
            raise ValueError(
                f"EA-Qwen2 does not support sliding-window attention (layers {sliding} slide, window "
                f"{self.sliding_window}): a sliding cache drops keys that the EA convolution's cached rows still "
                "read. Load the checkpoint with use_sliding_window=False (full attention in every layer)."
            )


__all__ = ["EAQwen2Config"]
