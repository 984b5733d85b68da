"""`scripts/examples/run_uea.py` end to end on a tiny `.ts` dataset it reads from a folder: every model type, several
seeds, results files, model selection on validation, resume, the saved model, and argument files."""

import json
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard

from ea_hf.time_series import TimeSeriesDataset, write_ts
from scripts.examples.run_uea import RECIPE, main, parse_args
from scripts.release import push_to_hub


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Two classes told apart by the sign of channel 0; variable lengths 5..9, 2 channels, a missing value."""
    folder = tmp_path_factory.mktemp("uea")
    rng = np.random.default_rng(0)
    for split, size in (("TRAIN", 20), ("TEST", 10)):
        labels = np.arange(size) % 2
        series = []
        for label in labels:
            case = rng.normal(size=(int(rng.integers(5, 10)), 2)).astype(np.float32)
            case[:, 0] += 2.0 if label else -2.0
            series.append(case)
        series[0][1, 1] = np.nan
        write_ts(TimeSeriesDataset(series, labels, ["down", "up"]), folder / f"Toy_{split}.ts", "Toy")
    return folder


@pytest.mark.parametrize("model_type", ["ea_dc", "dc", "tst"])
def test_runs_every_model_type_over_seeds(model_type, data_dir, tmp_path):
    argv = [
        "--dataset_name", "Toy", "--data_dir", str(data_dir), "--model_type", model_type, "--seeds", "0", "1",
        "--num_train_epochs", "3", "--per_device_train_batch_size", "8", "--use_cpu", "true",
        "--output_dir", str(tmp_path),
    ]  # fmt: skip
    summary = main(argv)
    assert summary["model_type"] == model_type and summary["seeds"] == [0, 1]
    assert 0.0 <= summary["test_accuracy_mean"] <= 1.0 and summary["test_accuracy_std"] >= 0.0
    saved = json.loads((tmp_path / "all_results.json").read_text())
    assert saved["test_accuracy_mean"] == summary["test_accuracy_mean"]
    for seed in (0, 1):
        run = json.loads((tmp_path / f"seed_{seed}" / "all_results.json").read_text())
        assert {"eval_loss", "eval_accuracy", "test_accuracy", "train_seconds", "best_checkpoint"} <= run.keys()
        assert (tmp_path / f"seed_{seed}" / "test_results.json").is_file()
        # the selected checkpoint is the one with the lowest validation loss of the logged evaluations
        state = json.loads((Path(run["best_checkpoint"]) / "trainer_state.json").read_text())
        losses = [log["eval_loss"] for log in state["log_history"] if "eval_loss" in log]
        assert state["best_metric"] == pytest.approx(min(losses))
    config = json.loads((tmp_path / "seed_0" / "config.json").read_text())
    assert config["num_channels"] == 2 and config["id2label"] == {"0": "down", "1": "up"}
    assert set(config["standardizer"]) == {"mean", "std"}
    if model_type != "tst":
        assert config["ea_encoder"] is (model_type == "ea_dc")
        assert config["auto_map"]["AutoModelForSequenceClassification"].endswith("ForTimeSeriesClassification")

    # a finished seed is not trained again
    (tmp_path / "seed_1" / "model.safetensors").unlink()
    assert main(argv)["runs"] == summary["runs"]


def test_model_selection_runs_leave_test_unscored(data_dir, tmp_path):
    argv = [
        "--dataset_name", "Toy", "--data_dir", str(data_dir), "--model_type", "ea_dc", "--seeds", "0",
        "--num_train_epochs", "2", "--use_cpu", "true", "--score_test", "false", "--output_dir", str(tmp_path),
    ]  # fmt: skip
    summary = main(argv)
    assert 0.0 <= summary["eval_accuracy_mean"] <= 1.0 and "test_accuracy_mean" not in summary
    run = json.loads((tmp_path / "seed_0" / "all_results.json").read_text())
    assert "eval_accuracy" in run and not any(key.startswith("test_") for key in run)
    assert not (tmp_path / "seed_0" / "test_results.json").exists()


def test_unknown_model_type_is_refused(data_dir, tmp_path):
    with pytest.raises(ValueError, match="--model_type must be one of"):
        main(
            [
                "--dataset_name",
                "Toy",
                "--data_dir",
                str(data_dir),
                "--model_type",
                "lstm",
                "--output_dir",
                str(tmp_path),
            ]
        )


def test_an_argument_file_gives_the_arguments_of_the_command_line(tmp_path, monkeypatch):
    """Both with the authors' recipe for the training arguments not given."""
    monkeypatch.chdir(tmp_path)
    values = {"dataset_name": "Toy", "model_type": "dc", "seeds": [0, 1], "num_train_epochs": 3, "output_dir": "o"}
    (tmp_path / "args.json").write_text(json.dumps(values))
    (tmp_path / "args.yaml").write_text(
        "dataset_name: Toy\nmodel_type: dc\nseeds: [0, 1]\nnum_train_epochs: 3\noutput_dir: o\n"
    )
    argv = ["--dataset_name", "Toy", "--model_type", "dc", "--seeds", "0", "1", "--num_train_epochs", "3"]
    from_command_line = parse_args([*argv, "--output_dir", "o"])
    for name in ("args.json", "args.yaml"):
        model_args, data_args, training_args = parse_args([str(tmp_path / name)])
        assert (model_args.model_type, data_args.seeds, training_args.num_train_epochs) == ("dc", [0, 1], 3)
        assert training_args.learning_rate == RECIPE["learning_rate"] and training_args.load_best_model_at_end
        assert (model_args, data_args, training_args) == from_command_line


def test_ea_switches_of_a_model_without_ea_are_refused(data_dir, tmp_path):
    argv = ["--dataset_name", "Toy", "--data_dir", str(data_dir), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match=r"--ea_alpha with --model_type dc: only ea_dc has evolving attention"):
        main([*argv, "--model_type", "dc", "--ea_alpha", "0.5"])
    assert not (tmp_path / "out").exists()


def test_a_misspelled_dataset_is_told_from_missing_files(data_dir, tmp_path):
    with pytest.raises(ValueError, match=r"--dataset_name Toi: unknown dataset \(did you mean Toy\?\)") as error:
        main(["--dataset_name", "Toi", "--data_dir", str(data_dir), "--output_dir", str(tmp_path)])
    assert "aeon" not in str(error.value)
    with pytest.raises(FileNotFoundError, match="--data_dir .*nowhere: no such folder"):
        main(["--dataset_name", "Toy", "--data_dir", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path)])


def test_a_seed_folder_works_without_ea_hf_and_is_ready_for_the_hub(data_dir, tmp_path):
    argv = ["--dataset_name", "Toy", "--data_dir", str(data_dir), "--num_train_epochs", "2", "--use_cpu", "true",
            "--hub_model_id", "org/ea-dc-toy", "--output_dir", str(tmp_path)]  # fmt: skip
    main(argv)
    card = ModelCard.load(tmp_path / "seed_0" / "README.md").data
    assert card.pipeline_tag == "time-series-classification" and card.license == "apache-2.0"
    assert len(card.widget) == 3 and "evolving-attention" in card.tags
    push_to_hub.verify(tmp_path / "seed_0", "org/ea-dc-toy")  # runs the widget in an interpreter without ea_hf
