"""EA-T5: the shared model tests over every head, the shared decoder tests (no future leak, cached generation, padding
invariance of translations, cache and input errors), and vanilla T5 checkpoints."""

import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    T5Config,
    T5EncoderModel,
    T5ForConditionalGeneration,
    T5Model,
)

from ea_hf import (
    EAT5Config,
    EAT5EncoderModel,
    EAT5ForConditionalGeneration,
    EAT5Model,
    convert_checkpoint,
)

from ea_model_tester import EAModelTesterMixin, conv_parameters
from seq2seq_tester import Seq2SeqTesterMixin, build_ea, source_batch
from tiny_configs import T5 as TINY


ALL_CHAINS_OFF = {"ea_encoder": False, "ea_decoder": False, "ea_cross_attention": False}


def build(model_class=EAT5ForConditionalGeneration, **overrides):
    return build_ea(EAT5Config, model_class, TINY, **overrides)


class TestEAT5(EAModelTesterMixin):
    vanilla_config_class = T5Config
    config_class = EAT5Config
    heads = [
        (EAT5Model, T5Model),
        (EAT5ForConditionalGeneration, T5ForConditionalGeneration),
        (EAT5EncoderModel, T5EncoderModel),
    ]
    ea_off = ALL_CHAINS_OFF
    attention_outputs = ("encoder_attentions", "decoder_attentions", "cross_attentions", "attentions")
    hidden_states_outputs = ("encoder_hidden_states", "decoder_hidden_states", "hidden_states")
    padded_inputs = ("input_ids", "attention_mask")
    rtol = 1e-5  # T5's intermediate hidden states reach ~100: compare relative to the tensor's magnitude
    trainer_heads = [EAT5ForConditionalGeneration]

    def make_config(self, **overrides):
        return EAT5Config(**{**TINY, **overrides})

    def make_inputs(self, model_class, labels=False):
        input_ids, attention_mask = source_batch()
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if model_class is not EAT5EncoderModel:
            inputs["decoder_input_ids"] = torch.randint(2, 60, (3, 5))
            if labels and model_class is EAT5ForConditionalGeneration:
                inputs["labels"] = torch.randint(2, 60, (3, 5))
        return inputs


class TestEAT5Decoding(Seq2SeqTesterMixin):
    config_class = EAT5Config
    model_class = EAT5ForConditionalGeneration
    vanilla_class = T5ForConditionalGeneration
    vanilla_config_class = T5Config
    tiny = TINY
    other_heads = {"num_heads": 2, "d_kv": 16}


def test_vanilla_t5_checkpoint_loads_and_converts(tmp_path):
    torch.manual_seed(0)
    vanilla = T5ForConditionalGeneration(T5Config(**TINY)).eval()
    vanilla.save_pretrained(tmp_path / "t5")
    model, info = EAT5ForConditionalGeneration.from_pretrained(tmp_path / "t5", output_loading_info=True)
    # three chains, each without a conv in its first block
    assert set(info["missing_keys"]) == set(conv_parameters(model)) and len(info["missing_keys"]) == 3 * 2 * 2
    assert not info["unexpected_keys"]
    off = EAT5ForConditionalGeneration.from_pretrained(tmp_path / "t5", ea_alpha=0.0, ea_beta=0.0).eval()
    vanilla.set_attn_implementation("eager")
    input_ids, attention_mask = source_batch()
    expected = vanilla.generate(input_ids, attention_mask=attention_mask, max_new_tokens=8)
    assert torch.equal(off.generate(input_ids, attention_mask=attention_mask, max_new_tokens=8), expected)

    out = convert_checkpoint(str(tmp_path / "t5"), str(tmp_path / "ea-t5"), ea_beta=0.3)
    converted = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert isinstance(converted, EAT5ForConditionalGeneration) and converted.config.ea_beta == 0.3
