"""EA-Marian: the shared model tests over every head, the shared decoder tests (no future leak, cached generation,
padding invariance of translations, cache and input errors), vanilla Marian checkpoints, and the position table."""

import pytest
import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    MarianConfig,
    MarianModel,
    MarianMTModel,
)

from ea_hf import EAMarianConfig, EAMarianModel, EAMarianMTModel, convert_checkpoint

from ea_model_tester import EAModelTesterMixin, conv_parameters
from seq2seq_tester import Seq2SeqTesterMixin, build_ea, source_batch
from tiny_configs import MARIAN as TINY


ALL_CHAINS_OFF = {"ea_encoder": False, "ea_decoder": False, "ea_cross_attention": False}


def build(model_class=EAMarianMTModel, **overrides):
    return build_ea(EAMarianConfig, model_class, TINY, **overrides)


class TestEAMarian(EAModelTesterMixin):
    vanilla_config_class = MarianConfig
    config_class = EAMarianConfig
    heads = [(EAMarianModel, MarianModel), (EAMarianMTModel, MarianMTModel)]
    ea_off = ALL_CHAINS_OFF
    attention_outputs = ("encoder_attentions", "decoder_attentions", "cross_attentions")
    hidden_states_outputs = ("encoder_hidden_states", "decoder_hidden_states")
    padded_inputs = ("input_ids", "attention_mask")
    trainer_heads = [EAMarianMTModel]

    def make_config(self, **overrides):
        return EAMarianConfig(**{**TINY, **overrides})

    def make_inputs(self, model_class, labels=False):
        input_ids, attention_mask = source_batch()
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        inputs["decoder_input_ids"] = torch.randint(2, 60, (3, 5))
        if labels and model_class is EAMarianMTModel:
            inputs["labels"] = torch.randint(2, 60, (3, 5))
        return inputs


class TestEAMarianDecoding(Seq2SeqTesterMixin):
    config_class = EAMarianConfig
    model_class = EAMarianMTModel
    vanilla_class = MarianMTModel
    vanilla_config_class = MarianConfig
    tiny = TINY
    other_heads = {"encoder_attention_heads": 2, "decoder_attention_heads": 2}


def save_vanilla_marian(folder, **overrides) -> MarianMTModel:
    torch.manual_seed(0)
    vanilla = MarianMTModel(MarianConfig(**TINY, **overrides)).eval()
    with torch.no_grad():  # a trained checkpoint's bias is not zero: check that it is loaded, not re-initialised
        vanilla.final_logits_bias.normal_()
    vanilla.save_pretrained(folder)
    return vanilla


@pytest.mark.parametrize(
    "embeddings",
    [{}, {"share_encoder_decoder_embeddings": False, "decoder_vocab_size": 50}],
    ids=["shared", "separate"],
)
def test_vanilla_marian_checkpoint_loads_and_generates_alike(embeddings, tmp_path):
    vanilla = save_vanilla_marian(tmp_path, **embeddings)
    model, info = EAMarianMTModel.from_pretrained(tmp_path, output_loading_info=True)
    # three chains, each without a conv in its first layer; the sinusoidal positions are not saved, but rebuilt
    assert set(info["missing_keys"]) == set(conv_parameters(model)) and len(info["missing_keys"]) == 3 * 2 * 2
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert torch.equal(model.final_logits_bias, vanilla.final_logits_bias)
    for stack in ("encoder", "decoder"):
        positions = getattr(model.model, stack).embed_positions.weight
        assert torch.equal(positions, getattr(vanilla.model, stack).embed_positions.weight)
    off = EAMarianMTModel.from_pretrained(tmp_path, ea_alpha=0.0, ea_beta=0.0).eval()
    vanilla.set_attn_implementation("eager")
    input_ids, attention_mask = source_batch()
    expected = vanilla.generate(input_ids, attention_mask=attention_mask, max_new_tokens=8)
    assert torch.equal(off.generate(input_ids, attention_mask=attention_mask, max_new_tokens=8), expected)


def test_convert_checkpoint_handles_marian(tmp_path):
    """A Marian folder without tokenizer files (MarianTokenizer then raises TypeError) converts with a warning."""
    vanilla = save_vanilla_marian(tmp_path / "marian")
    out = convert_checkpoint(str(tmp_path / "marian"), str(tmp_path / "ea-marian"), ea_beta=0.3)
    converted = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert isinstance(converted, EAMarianMTModel) and converted.config.ea_beta == 0.3
    assert converted.config.auto_map["AutoModelForSeq2SeqLM"] == "modeling_ea_marian.EAMarianMTModel"
    assert torch.equal(converted.lm_head.weight, vanilla.lm_head.weight)


def test_inputs_longer_than_the_position_table_are_refused():
    """Marian's sinusoidal table has `max_position_embeddings` rows: the source, the decoder input, and cached plus
    new decoder positions must fit in it."""
    model = build()
    input_ids, attention_mask = source_batch()
    too_long = torch.randint(2, 60, (3, 65))
    with pytest.raises(ValueError, match="The decoder input has 65 positions.*max_position_embeddings"):
        model(input_ids, attention_mask=attention_mask, decoder_input_ids=too_long)
    with pytest.raises(ValueError, match="The source has 65 positions.*max_position_embeddings"):
        model(too_long, decoder_input_ids=too_long[:, :4])
    first = model(input_ids, attention_mask=attention_mask, decoder_input_ids=too_long[:, :62], use_cache=True)
    with pytest.raises(ValueError, match="3 positions after 62 cached positions.*max_position_embeddings"):
        model(input_ids, attention_mask=attention_mask, decoder_input_ids=too_long[:, :3], cache=first.cache)
