"""EA-Qwen2: the shared model tests over every head, the shared causal-LM tests, and sliding windows refused."""

import pytest
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification, Qwen2Model

from ea_hf import EAQwen2Config, EAQwen2ForCausalLM, EAQwen2ForSequenceClassification, EAQwen2Model

from causal_lm_tester import CausalLMTesterMixin
from ea_model_tester import EAModelTesterMixin
from test_modeling_ea_llama import causal_lm_inputs
from tiny_configs import LLAMA as TINY


class TestEAQwen2(EAModelTesterMixin):
    vanilla_config_class = Qwen2Config
    config_class = EAQwen2Config
    heads = [
        (EAQwen2Model, Qwen2Model),
        (EAQwen2ForCausalLM, Qwen2ForCausalLM),
        (EAQwen2ForSequenceClassification, Qwen2ForSequenceClassification),
    ]
    ea_off = {"ea_decoder": False}
    padded_inputs = ("input_ids", "attention_mask")
    trainer_heads = [EAQwen2ForCausalLM]

    def make_config(self, **overrides):
        return EAQwen2Config(**{**TINY, **overrides})

    def make_inputs(self, model_class, labels=False):
        return causal_lm_inputs(model_class, labels)


class TestEAQwen2Decoding(CausalLMTesterMixin):
    config_class = EAQwen2Config
    model_class = EAQwen2ForCausalLM
    vanilla_class = Qwen2ForCausalLM
    vanilla_config_class = Qwen2Config
    tiny = TINY
    pipeline_as_remote_code = False  # its heads load as remote code in TestEAQwen2; the pipeline is EA-Llama's


def test_q_k_v_have_biases_and_the_output_projection_none():
    attention = EAQwen2Model(EAQwen2Config(**TINY)).layers[1].self_attn
    assert all(getattr(attention, name).bias is not None for name in ("q_proj", "k_proj", "v_proj"))
    assert attention.o_proj.bias is None and attention.evolving_attention is not None


def test_sliding_window_attention_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"sliding-window attention \(layers \[1, 2\] slide"):
        EAQwen2ForCausalLM(EAQwen2Config(**TINY, use_sliding_window=True, sliding_window=4, max_window_layers=1))
    sliding = Qwen2Config(**TINY, use_sliding_window=True, sliding_window=4, max_window_layers=1)
    Qwen2ForCausalLM(sliding).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="use_sliding_window=False"):
        EAQwen2ForCausalLM.from_pretrained(tmp_path)
    model = EAQwen2ForCausalLM.from_pretrained(tmp_path, use_sliding_window=False)  # full attention everywhere
    assert not model.config.use_sliding_window and model.model.layers[2].self_attn.evolving_attention is not None
