"""The main job's data split and a short end-to-end run of `scripts/demo.py` (the full run is `make demo`)."""

import json
import subprocess
import sys
from pathlib import Path


SCRIPTS = Path(__file__).parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from rotten_tomatoes import load_rotten_tomatoes  # noqa: E402


def test_rotten_tomatoes_split_is_fixed_balanced_and_disjoint():
    data = load_rotten_tomatoes(seed=42)
    assert {split: len(data[split]) for split in data} == {"train": 6824, "validation": 853, "test": 853}
    assert data["train"].features["label"].names == ["negative", "positive"]
    assert abs(sum(data["train"]["label"]) / len(data["train"]) - 0.5) < 0.01
    again = load_rotten_tomatoes(seed=42)
    assert all(data[split]["sentence"] == again[split]["sentence"] for split in data)
    assert load_rotten_tomatoes(seed=1)["test"]["sentence"] != data["test"]["sentence"]
    train = set(data["train"]["sentence"])
    assert not train & set(data["test"]["sentence"]) and not train & set(data["validation"]["sentence"])


def test_demo_end_to_end_on_a_slice(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "demo.py"), "--output_dir", str(tmp_path), "--max_train_samples", "64"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "EA - vanilla" in result.stdout
    results = json.loads((tmp_path / "demo_results.json").read_text())
    for model in ("vanilla", "ea"):
        assert 0 <= results[model]["validation_accuracy"] <= 1 and 0 <= results[model]["test_accuracy"] <= 1
    assert results["ea"]["model_class"] == "EABertForSequenceClassification"
    assert len(results["pipeline_examples"]) == 4
    folder = tmp_path / "ea-minilm-l6-rotten-tomatoes"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "ea_bert" and "AutoModelForSequenceClassification" in config["auto_map"]
    assert {"modeling_ea_bert.py", "tokenizer.json", "model.safetensors"} <= {p.name for p in folder.iterdir()}
