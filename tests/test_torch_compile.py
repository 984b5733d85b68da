"""`torch.compile(fullgraph=True)` with inductor, its default backend, gives an EA model's eager results: inference and
a training step, with padding (`tests/test_export.py` checks whole-graph capture for every family)."""

import shutil

import pytest
import torch

from ea_hf import EABertConfig, EABertForSequenceClassification


pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile's CPU backend needs a C++ compiler")


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    config = EABertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        ea_alpha=0.5, ea_beta=0.4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3,
    )  # fmt: skip
    model = EABertForSequenceClassification(config)
    for name, parameter in model.named_parameters():  # the convs away from their identity init
        if ".evolving_attention.conv." in name:
            torch.nn.init.normal_(parameter, std=0.3)
    input_ids = torch.randint(1, 100, (3, 12))
    attention_mask = torch.ones(3, 12, dtype=torch.long)
    attention_mask[1, 9:] = 0
    attention_mask[2, 5:] = 0
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": torch.tensor([0, 2, 1])}
    return model, batch


def test_compiled_inference_matches_eager(model_and_batch):
    model, batch = model_and_batch
    model.eval()
    compiled = torch.compile(model, fullgraph=True)
    with torch.inference_mode():
        expected = model(**batch)
        got = compiled(**batch)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=1e-5)


def test_compiled_training_step_matches_eager(model_and_batch):
    model, batch = model_and_batch
    model.train()

    def gradients(module):
        module.zero_grad(set_to_none=True)
        loss = module(**batch).loss
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    expected_loss, expected = gradients(model)
    loss, got = gradients(torch.compile(model, fullgraph=True))
    torch.testing.assert_close(loss, expected_loss, atol=1e-5, rtol=1e-5)
    assert got.keys() == expected.keys()
    assert any(".evolving_attention.conv." in name for name in got)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)
