"""EA-DC-Transformer: the shared model tests (its twin without EA is the same model with `ea_encoder=False`), plus
variable-length series, masked BatchNorm statistics, the authors' defects fixed, and bad input."""

import pytest
import torch

from ea_hf import (
    EADCTransformerConfig,
    EADCTransformerForTimeSeriesClassification,
    EADCTransformerForTimeSeriesRegression,
    EADCTransformerModel,
)
from ea_hf.time_series import pad_batch

from ea_model_tester import EAModelTesterMixin, outputs_to_compare
from tiny_configs import DC as TINY


LENGTHS = (10, 7, 4)


def series_batch(seed=1):
    """Three series of lengths 10, 7 and 4 with 3 channels, padded: values [3, 10, 3] and mask [3, 10]."""
    generator = torch.Generator().manual_seed(seed)
    return pad_batch([torch.randn(length, 3, generator=generator).numpy() for length in LENGTHS])


class TestEADCTransformer(EAModelTesterMixin):
    config_class = EADCTransformerConfig
    heads = [
        (EADCTransformerModel, EADCTransformerModel),
        (EADCTransformerForTimeSeriesClassification, EADCTransformerForTimeSeriesClassification),
        (EADCTransformerForTimeSeriesRegression, EADCTransformerForTimeSeriesRegression),
    ]
    rtol = 1e-6  # hidden states double block by block (to ~30 here, BatchNorm's running statistics still at 0/1)

    def make_config(self, **overrides):
        return EADCTransformerConfig(**{**TINY, **overrides})

    def vanilla_config(self, config):
        return EADCTransformerConfig(**{**config.to_dict(), "ea_encoder": False})

    def make_inputs(self, model_class, labels=False):
        values, attention_mask = series_batch()
        inputs = {"past_values": values, "attention_mask": attention_mask}
        if labels and model_class is EADCTransformerForTimeSeriesClassification:
            inputs["labels"] = torch.tensor([0, 2, 1])
        if labels and model_class is EADCTransformerForTimeSeriesRegression:
            inputs["labels"] = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5], [0.0, 1.5, 1.0]])
        return inputs

    def test_standard_outputs(self, head):
        """One hidden state per block (plus the input's), two attention maps per block; tuples as dicts."""
        model = self.build(head[0])
        inputs = self.make_inputs(head[0])
        output = model(**inputs, output_hidden_states=True, output_attentions=True)
        assert len(output.hidden_states) == TINY["num_blocks"] + 1
        assert all(h.shape == (3, 10, TINY["d_model"]) for h in output.hidden_states)
        assert len(output.attentions) == 2 * TINY["num_blocks"]
        for attention in output.attentions:
            assert attention.shape == (3, TINY["num_attention_heads"], 10, 10)
            torch.testing.assert_close(attention.sum(-1), torch.ones_like(attention.sum(-1)))
        torch.testing.assert_close(model(**inputs, return_dict=False)[0], output[0])

    def test_padding_invariance(self, head):
        """Each series alone (unpadded) gives the same outputs as inside the padded batch."""
        model = self.build(head[0])
        inputs = self.make_inputs(head[0])
        batched = outputs_to_compare(model(**inputs, output_hidden_states=True, output_attentions=True))
        assert len(batched) > 1
        for i, length in enumerate(LENGTHS):
            alone = outputs_to_compare(
                model(inputs["past_values"][i : i + 1, :length], output_hidden_states=True, output_attentions=True)
            )
            for key, value in alone.items():
                expected = batched[key][i : i + 1]
                if key.startswith("attentions"):
                    expected = expected[..., :length, :length]
                elif expected.dim() == 3:
                    expected = expected[:, :length]
                self.assert_close(value, expected, f"{key} of series {i}")

    def test_padding_content_never_reaches_real_positions(self, head):
        model = self.build(head[0])
        inputs = self.make_inputs(head[0])
        padded = inputs["attention_mask"] == 0
        changed = dict(inputs, past_values=inputs["past_values"].masked_fill(padded[..., None], 9.0))
        reference = outputs_to_compare(model(**inputs, output_hidden_states=True))
        got = outputs_to_compare(model(**changed, output_hidden_states=True))
        real = ~padded
        for key, value in reference.items():
            if value.dim() == 3 and value.shape[1] == padded.shape[1]:
                assert torch.equal(got[key][real], value[real]), key
            else:
                assert torch.equal(got[key], value), key

    def test_trainer_and_gradient_accumulation(self, tmp_path):
        """Trainer trains both heads, and gradient checkpointing gives the same gradient norm. (BatchNorm's batch
        statistics make micro-batches differ from one large batch, so accumulation is not exact here, by design.)"""
        for model_class in (EADCTransformerForTimeSeriesClassification, EADCTransformerForTimeSeriesRegression):
            norm = self.trainer_grad_norm(model_class, tmp_path, 1)
            assert norm > 0
            assert self.trainer_grad_norm(model_class, tmp_path, 1, checkpointing=True) == pytest.approx(
                norm, rel=1e-5
            )


def test_block_zero_has_no_ea_step():
    model = EADCTransformerModel(EADCTransformerConfig(**TINY))
    convs = [name for name, _ in model.named_parameters() if ".evolving_attention.conv.weight" in name]
    assert convs == [f"blocks.{b}.layers.{i}.evolving_attention.conv.weight" for b in (1, 2) for i in (0, 1)]


def test_evaluation_is_deterministic_and_needs_no_gpu():
    """The authors add freshly sampled random position logits on every forward pass (on CUDA only): not here."""
    model = EADCTransformerForTimeSeriesClassification(EADCTransformerConfig(**TINY)).eval()
    values, attention_mask = series_batch()
    assert torch.equal(model(values, attention_mask).logits, model(values, attention_mask).logits)


def test_heads_merge_per_time_step():
    """The attention branch equals multi-head attention with heads merged per time step (the authors reshape without
    a permute, which mixes time steps and channels)."""
    config = EADCTransformerConfig(**{**TINY, "ea_encoder": False})
    layer = EADCTransformerModel(config).blocks[0].layers[0].eval()
    values = torch.randn(2, 6, TINY["d_model"])
    output, _, _ = layer(values)
    query, key, value = layer.qkv(values).split([layer.key_width, layer.key_width, layer.value_width], dim=-1)
    query, key, value = (x.view(2, 6, layer.num_heads, -1).transpose(1, 2) for x in (query, key, value))
    expected = torch.nn.functional.scaled_dot_product_attention(query, key, value).transpose(1, 2).reshape(2, 6, -1)
    torch.testing.assert_close(output[..., TINY["d_model"] - layer.value_width :], expected)


def test_masked_batch_norm_statistics_ignore_padding():
    """In training, the BatchNorm statistics (and so the running statistics) come from the real time steps only."""
    torch.manual_seed(0)
    model = EADCTransformerModel(EADCTransformerConfig(**TINY)).train()
    values, attention_mask = series_batch()
    model(values, attention_mask=attention_mask)
    running = [m.running_mean.clone() for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    torch.manual_seed(0)
    model_again = EADCTransformerModel(EADCTransformerConfig(**TINY)).train()
    changed = values.masked_fill((attention_mask == 0)[..., None], 50.0)
    model_again(changed, attention_mask=attention_mask)
    again = [m.running_mean for m in model_again.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    for a, b in zip(running, again, strict=True):
        torch.testing.assert_close(a, b)


def test_bad_input():
    model = EADCTransformerForTimeSeriesClassification(EADCTransformerConfig(**TINY)).eval()
    values, attention_mask = series_batch()
    with pytest.raises(ValueError, match=r"\[batch, time, 3 channels\]"):
        model(values[..., :2])
    with pytest.raises(TypeError, match="float tensor"):
        model(values.long())
    with pytest.raises(ValueError, match="more than context_length = 12"):
        model(torch.randn(1, 13, 3))
    with pytest.raises(ValueError, match="NaN"):
        model(values.masked_fill(attention_mask[..., None] == 0, float("nan")), attention_mask)
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(values, attention_mask[:, :5])
    with pytest.raises(ValueError, match="attention_value_fraction"):
        EADCTransformerConfig(**{**TINY, "attention_value_fraction": 0.1})
    with pytest.raises(ValueError, match="ea_beta"):
        EADCTransformerConfig(**{**TINY, "ea_beta": 1.5})
