"""EA-BERT: the shared model tests over every head, plus BERT-specific loading, conversion and bad input."""

import logging

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    T5Config,
    T5Model,
)

from ea_hf import (
    EABertConfig,
    EABertForMaskedLM,
    EABertForMultipleChoice,
    EABertForQuestionAnswering,
    EABertForSequenceClassification,
    EABertForTokenClassification,
    EABertModel,
    convert_checkpoint,
)

from ea_model_tester import EAModelTesterMixin, conv_parameters
from tiny_configs import BERT as TINY


class TestEABert(EAModelTesterMixin):
    vanilla_config_class = BertConfig
    config_class = EABertConfig
    heads = [
        (EABertModel, BertModel),
        (EABertForMaskedLM, BertForMaskedLM),
        (EABertForSequenceClassification, BertForSequenceClassification),
        (EABertForTokenClassification, BertForTokenClassification),
        (EABertForQuestionAnswering, BertForQuestionAnswering),
        (EABertForMultipleChoice, BertForMultipleChoice),
    ]
    trainer_heads = [EABertForSequenceClassification, EABertForMaskedLM, EABertForTokenClassification]

    def make_config(self, **overrides):
        return EABertConfig(**{**TINY, **overrides})

    def make_inputs(self, model_class, labels=False):
        torch.manual_seed(1)
        batch, length = 3, 9
        shape = (batch, 2, length) if model_class is EABertForMultipleChoice else (batch, length)
        inputs = {
            "input_ids": torch.randint(1, 99, shape),
            "attention_mask": torch.ones(shape, dtype=torch.long),
            "token_type_ids": torch.zeros(shape, dtype=torch.long),
        }
        inputs["attention_mask"][1, ..., 5:] = 0  # right padding
        inputs["attention_mask"][2, ..., 7:] = 0
        inputs["input_ids"] = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, 0)
        if labels:
            if model_class in (EABertForSequenceClassification, EABertForMultipleChoice):
                inputs["labels"] = torch.tensor([0, 1, 1])
            elif model_class is EABertForMaskedLM:
                inputs["labels"] = torch.randint(0, 99, shape).masked_fill(inputs["attention_mask"] == 0, -100)
            elif model_class is EABertForTokenClassification:
                inputs["labels"] = torch.randint(0, 2, shape).masked_fill(inputs["attention_mask"] == 0, -100)
            elif model_class is EABertForQuestionAnswering:
                inputs["start_positions"], inputs["end_positions"] = torch.tensor([1, 2, 0]), torch.tensor([3, 4, 6])
        return inputs


@pytest.fixture
def vanilla_bert_folder(tmp_path):
    """A small vanilla BERT classifier saved locally, as a Hub checkpoint would be."""
    torch.manual_seed(0)
    config = BertConfig(**{k: v for k, v in TINY.items()})
    folder = tmp_path / "vanilla-bert"
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_vanilla_checkpoint_loads_with_only_the_ea_convs_new(vanilla_bert_folder, caplog):
    with caplog.at_level(logging.WARNING):
        model, info = EABertForSequenceClassification.from_pretrained(vanilla_bert_folder, output_loading_info=True)
    assert set(info["missing_keys"]) == set(conv_parameters(model))
    assert len(info["missing_keys"]) == 2 * (TINY["num_hidden_layers"] - 1)  # layer 0 starts the chain: no conv
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    conversions = [r for r in caplog.records if "Converting a vanilla `bert` config" in r.getMessage()]
    assert len(conversions) == 1
    with caplog.at_level(logging.WARNING):
        EABertForSequenceClassification.from_pretrained(vanilla_bert_folder, ea_alpha=0.3)
    assert any("ea_alpha=0.3," in r.getMessage() for r in caplog.records)  # the log names the values applied
    assert model.config.model_type == "ea_bert" and model.config.ea_alpha == EABertConfig().ea_alpha

    vanilla = BertForSequenceClassification.from_pretrained(vanilla_bert_folder).eval()
    vanilla.set_attn_implementation("eager")
    off = EABertForSequenceClassification.from_pretrained(vanilla_bert_folder, ea_alpha=0.0, ea_beta=0.0).eval()
    ids = torch.randint(1, 99, (2, 10))
    torch.testing.assert_close(off(ids).logits, vanilla(ids).logits, atol=1e-5, rtol=0)


def test_convert_checkpoint(vanilla_bert_folder, tmp_path):
    out = convert_checkpoint(str(vanilla_bert_folder), str(tmp_path / "ea"), ea_alpha=0.25, ea_beta=0.75)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert isinstance(model, EABertForSequenceClassification)
    assert (model.config.ea_alpha, model.config.ea_beta) == (0.25, 0.75)
    assert {"configuration_ea_bert.py", "modeling_ea_bert.py", "evolving_attention.py"} <= {
        p.name for p in (tmp_path / "ea").iterdir()
    }
    with pytest.raises(FileExistsError):
        convert_checkpoint(str(vanilla_bert_folder), out)


def test_unrelated_architecture_is_refused(tmp_path):
    T5Model(T5Config(vocab_size=50, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="`t5` checkpoint"):
        EABertModel.from_pretrained(tmp_path)


def test_auto_classes_are_registered():
    config = EABertConfig(**TINY)
    assert isinstance(AutoModel.from_config(config), EABertModel)
    assert isinstance(AutoModelForSequenceClassification.from_config(config), EABertForSequenceClassification)


@pytest.fixture
def tiny_model():
    return EABertModel(EABertConfig(**TINY)).eval()


def test_attention_mask_of_the_wrong_shape(tiny_model):
    ids = torch.randint(1, 99, (2, 8))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \[batch, seq_len\]"):
        tiny_model(ids, attention_mask=torch.ones(2, 7))
    with pytest.raises(ValueError, match="attention_mask"):
        tiny_model(ids, attention_mask=torch.ones(2, 1, 8, 8))


def test_sequence_longer_than_the_position_table(tiny_model):
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        tiny_model(torch.randint(1, 99, (1, 65)))


def test_float_input_ids(tiny_model):
    with pytest.raises(TypeError, match="integer token ids"):
        tiny_model(torch.rand(2, 8))


def test_ids_outside_the_vocabulary(tiny_model):
    with pytest.raises(ValueError, match="tokenizer does not match the model"):
        tiny_model(torch.tensor([[1, 2, 99]]))


def test_decoder_config_is_refused():
    with pytest.raises(ValueError, match="encoder"):
        EABertModel(EABertConfig(**TINY, is_decoder=True))
