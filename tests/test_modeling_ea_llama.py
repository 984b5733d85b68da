"""EA-Llama: the shared model tests over every head and the shared causal-LM tests (padding, cached generation,
caches refused, vanilla checkpoints, the text-generation pipeline)."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel

from ea_hf import EALlamaConfig, EALlamaForCausalLM, EALlamaForSequenceClassification, EALlamaModel

from causal_lm_tester import CausalLMTesterMixin, prompts
from ea_model_tester import EAModelTesterMixin
from tiny_configs import LLAMA as TINY


def causal_lm_inputs(model_class, labels: bool) -> dict:
    """A right-padded batch (the shared tester's padding checks cut examples at their length), with labels for the
    heads that have a loss: the next tokens (-100 at padding), or one class per sequence."""
    input_ids, attention_mask = prompts("right")
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if labels and model_class.__name__.endswith("ForCausalLM"):
        inputs["labels"] = input_ids.masked_fill(attention_mask == 0, -100)
    elif labels and model_class.__name__.endswith("ForSequenceClassification"):
        inputs["labels"] = torch.tensor([0, 2, 1])
    return inputs


class TestEALlama(EAModelTesterMixin):
    vanilla_config_class = LlamaConfig
    config_class = EALlamaConfig
    heads = [
        (EALlamaModel, LlamaModel),
        (EALlamaForCausalLM, LlamaForCausalLM),
        (EALlamaForSequenceClassification, LlamaForSequenceClassification),
    ]
    ea_off = {"ea_decoder": False}
    padded_inputs = ("input_ids", "attention_mask")
    trainer_heads = [EALlamaForCausalLM, EALlamaForSequenceClassification]

    def make_config(self, **overrides):
        return EALlamaConfig(**{**TINY, **overrides})

    def make_inputs(self, model_class, labels=False):
        return causal_lm_inputs(model_class, labels)


class TestEALlamaDecoding(CausalLMTesterMixin):
    config_class = EALlamaConfig
    model_class = EALlamaForCausalLM
    vanilla_class = LlamaForCausalLM
    vanilla_config_class = LlamaConfig
    tiny = TINY
