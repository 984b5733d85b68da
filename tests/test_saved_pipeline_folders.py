"""What `run_translation.py` and `run_uea.py` do after `trainer.save_model()`: `ea_hf.save_translation_pipeline` and
`ea_hf.save_time_series_pipeline` on the output folder that already holds the model (and tokenizer) make its
pipeline load as remote code where ea_hf cannot be imported; calling them again changes nothing."""

import json

import numpy as np
import pytest
import torch
from transformers import Trainer, TrainingArguments

import ea_hf
from ea_hf import EADCTransformerConfig, EADCTransformerForTimeSeriesClassification
from ea_hf.time_series import Standardizer, TimeSeriesDataset

from ea_model_tester import run_without_ea_hf
from test_translation_pipeline import TEXTS, ea_marian, marian, spm_files  # noqa: F401  (fixtures: tiny EA-Marian)


pytestmark = [
    pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses"),
    pytest.mark.usefixtures("one_thread"),
]


def series_classifier() -> EADCTransformerForTimeSeriesClassification:
    torch.manual_seed(0)
    config = EADCTransformerConfig(
        num_channels=2,
        context_length=8,
        d_model=8,
        num_blocks=1,
        dim_feedforward=8,
        num_attention_heads=2,
        attention_key_fraction=0.5,
        attention_value_fraction=0.5,
        dropout=0.0,
        id2label={0: "a", 1: "b"},
    )
    model = EADCTransformerForTimeSeriesClassification(config).eval()
    series = [np.arange(12, dtype=np.float32).reshape(6, 2), np.ones((8, 2), np.float32)]
    model.config.standardizer = Standardizer().fit(TimeSeriesDataset(series, None)).to_dict()  # as run_uea.py
    return model


def trainer_folder(model, folder, tokenizer=None) -> None:
    """The output folder of a training run: `trainer.save_model()`."""
    args = TrainingArguments(output_dir=str(folder), report_to=[], use_cpu=True)
    Trainer(model=model, args=args, processing_class=tokenizer).save_model()


def folder_bytes(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def test_pipelines_added_after_save_model_load_without_ea_hf(ea_marian, tmp_path):  # noqa: F811
    model, tokenizer = ea_marian
    classifier = series_classifier()
    trainer_folder(model, tmp_path / "translation", tokenizer)
    trainer_folder(classifier, tmp_path / "series")
    assert "custom_pipelines" not in json.loads((tmp_path / "translation" / "config.json").read_text())

    snapshots = []
    for _ in range(2):  # the scripts' calls, made twice (a resumed run): the second changes nothing
        ea_hf.save_translation_pipeline(model, tokenizer, tmp_path / "translation")
        ea_hf.save_time_series_pipeline(classifier, tmp_path / "series")
        snapshots.append({name: folder_bytes(tmp_path / name) for name in ("translation", "series")})
    assert snapshots[0] == snapshots[1]
    written = set(snapshots[0]["translation"])
    assert {"training_args.bin", "pipeline_translation.py", "tokenizer_config.json"} <= written
    assert "pipeline_time_series.py" in snapshots[0]["series"]

    series = np.linspace(-1, 1, 10, dtype=np.float32).reshape(5, 2)
    expected = {
        "translation": ea_hf.TranslationPipeline(model, tokenizer, device=-1)(TEXTS[:2], max_new_tokens=5),
        "series": ea_hf.TimeSeriesClassificationPipeline(model=classifier, device=-1)(series, top_k=None),
    }
    result = run_without_ea_hf(
        f"""
        import json
        import numpy as np
        from transformers import pipeline
        root = {str(tmp_path)!r}
        translator = pipeline("translation", model=root + "/translation", trust_remote_code=True, device="cpu")
        classifier = pipeline("time-series-classification", model=root + "/series", trust_remote_code=True)
        series = np.linspace(-1, 1, 10, dtype=np.float32).reshape(5, 2)
        print(json.dumps({{
            "translation": translator({TEXTS[:2]!r}, max_new_tokens=5),
            "series": classifier(series, top_k=None),
        }}))
        """,
        tmp_path,
    )
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["translation"] == expected["translation"]
    assert {r["label"]: r["score"] for r in got["series"]} == pytest.approx(
        {r["label"]: r["score"] for r in expected["series"]}, abs=1e-6
    )
