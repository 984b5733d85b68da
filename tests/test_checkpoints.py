"""`scripts/release/`: `build_checkpoints`, `model_cards` and `push_to_hub`: a smoke build of a real checkpoint
(EA-DC-Transformer on BasicMotions, 2 epochs) from its recipe, its card (never in `model_cards/`: only a release build
writes there), its verification, refusals and the upload call."""

import importlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard

from scripts.release import build_checkpoints, model_cards, push_to_hub


NAME = "ea-dc-transformer-basicmotions"
REPO = f"{model_cards.DEFAULT_ORG}/{NAME}"
SMOKE = {"num_train_epochs": 2}


def cards_on_disk() -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in build_checkpoints.CARDS_DIR.iterdir()}


@pytest.fixture(scope="module")
def cards_before() -> dict[str, int]:
    """`model_cards/` before the smoke build."""
    return cards_on_disk()


@pytest.fixture(scope="module")
def built(tmp_path_factory, cards_before):
    output_dir = tmp_path_factory.mktemp("checkpoints")
    folder = build_checkpoints.build(build_checkpoints.CHECKPOINTS[NAME], output_dir, parallel=True, smoke=SMOKE)
    return output_dir, folder


def card_metadata(folder: Path) -> dict:
    return ModelCard.load(folder / "README.md").data.to_dict()


def test_build_writes_a_complete_hub_folder(built):
    output_dir, folder = built
    assert folder == output_dir / NAME
    names = {path.name for path in folder.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "pipeline_time_series.py"} <= names
    assert not {name for name in names if name.startswith(("checkpoint-", "trainer_", "training_args"))}
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "ea_dc_transformer" and config["ea_encoder"] is True
    assert "AutoModelForSequenceClassification" in config["auto_map"]
    assert "time-series-classification" in config["custom_pipelines"]
    assert len(list((folder / "examples").glob("*.csv"))) == 3
    assert "train_runtime" in (output_dir / "runs" / NAME / "vanilla.log").read_text()  # parallel: its own log

    results = json.loads((output_dir / "runs" / NAME / "results.json").read_text())
    assert results["smoke"] == SMOKE
    for twin in ("ea", "vanilla"):
        assert 0 <= results[twin]["test_accuracy"] <= 1 and 0 <= results[twin]["validation_accuracy"] <= 1
        assert results["training"][twin]["wall_seconds"] > 0
    vanilla_config = json.loads((output_dir / "runs" / NAME / "vanilla" / "seed_0" / "config.json").read_text())
    assert vanilla_config["ea_encoder"] is False  # the twin is the same model without EA


def test_card_holds_the_measured_results(built):
    output_dir, folder = built
    results = json.loads((output_dir / "runs" / NAME / "results.json").read_text())
    data = card_metadata(folder)
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "time-series-classification"
    assert {"evolving-attention", "custom_code"} <= set(data["tags"])
    metrics = {m["name"]: m["value"] for r in data["model-index"][0]["results"] for m in r["metrics"]}
    assert metrics["accuracy, TEST"] == round(results["ea"]["test_accuracy"], 4)
    for example in data["widget"]:
        assert example["src"].startswith(f"https://huggingface.co/{REPO}/resolve/main/examples/")
        assert example["output"][0]["score"] >= example["output"][-1]["score"]
    text = (folder / "README.md").read_text()
    assert "Smoke build" in text and "`--num_train_epochs 2`" in text
    assert f"| {results['vanilla']['test_accuracy']:.4f} | {results['ea']['test_accuracy']:.4f} |" in text
    assert "trust_remote_code=True" in text and "@article{wang2023evolving" in text


def test_each_twin_ran_from_its_complete_argument_file(built):
    output_dir, _ = built
    runs = output_dir / "runs" / NAME
    recipe = build_checkpoints.read_recipe(NAME)
    assert recipe["dataset_name"] == "BasicMotions" and recipe["seeds"] == [0]
    for twin, model_type in (("ea", "ea_dc"), ("vanilla", "dc")):
        arguments = json.loads((runs / f"{twin}.json").read_text())
        assert arguments == {**recipe, "model_type": model_type, "output_dir": str(runs / twin), **SMOKE}


@pytest.mark.parametrize(
    "name", [name for name, checkpoint in build_checkpoints.CHECKPOINTS.items() if checkpoint.script]
)
def test_every_recipe_is_an_argument_file_of_its_script(name, tmp_path):
    """Each twin's complete argument file parses with its script's own parser, every value as written."""
    checkpoint = build_checkpoints.CHECKPOINTS[name]
    script = importlib.import_module(f"scripts.examples.{checkpoint.script.removesuffix('.py')}")
    twins = build_checkpoints.twin_arguments(checkpoint, tmp_path, tmp_path / "data", SMOKE)
    assert set(twins) == {"ea", "vanilla"}
    for twin, arguments in twins.items():
        for key in ("model_name_or_path", "config_name", "tokenizer_name"):  # the inputs the builder makes first
            if key in arguments and arguments[key].startswith(str(tmp_path)):
                Path(arguments[key]).mkdir(parents=True, exist_ok=True)
        path = build_checkpoints.argument_file(tmp_path / f"{twin}.json", arguments)
        parsed = {key: value for group in script.parse_args([str(path)]) for key, value in vars(group).items()}
        assert {key: parsed[key] for key in arguments} == arguments | {"report_to": []}  # "none": no integrations


def test_a_resumed_twin_keeps_its_argument_file_and_refuses_other_arguments(tmp_path):
    path, arguments = tmp_path / "ea.json", {"num_train_epochs": 2, "output_dir": str(tmp_path / "ea")}
    assert build_checkpoints.argument_file(path, arguments) == path
    stamp = path.stat().st_mtime_ns
    assert build_checkpoints.argument_file(path, dict(arguments)) == path and path.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=r"holds other arguments \(num_train_epochs\)"):
        build_checkpoints.argument_file(path, {**arguments, "num_train_epochs": 3})
    assert json.loads(path.read_text()) == arguments


def test_only_a_release_build_writes_model_cards(cards_before, built, tmp_path):
    output_dir, folder = built
    assert cards_on_disk() == cards_before  # the smoke build into a temporary folder left model_cards/ alone
    release = build_checkpoints.CHECKPOINTS_DIR
    assert release == Path(__file__).parents[1] / "checkpoints"
    assert (build_checkpoints.CARDS_DIR / "template.md").is_file()
    assert build_checkpoints.release_card(folder, output_dir, {}, cards_dir=tmp_path) is None  # another output_dir
    assert build_checkpoints.release_card(folder, release, SMOKE, cards_dir=tmp_path) is None  # a smoke build
    assert build_checkpoints.release_card(folder, release, {}, "someone", cards_dir=tmp_path) is None  # another org
    assert not list(tmp_path.iterdir())
    card = build_checkpoints.release_card(folder, release / ".", {}, cards_dir=tmp_path)  # a real release build
    assert card == tmp_path / f"{NAME}.md" and card.read_text() == (folder / "README.md").read_text()


def test_summary_table_lists_the_build(built):
    output_dir, _ = built
    results = json.loads((output_dir / "runs" / NAME / "results.json").read_text())
    rows = [line for line in build_checkpoints.summary_table(output_dir).splitlines() if NAME in line]
    assert len(rows) == 1 and "(smoke build)" in rows[0]
    assert f"| {results['vanilla']['test_accuracy']:.4f} | {results['ea']['test_accuracy']:.4f} |" in rows[0]


def test_build_resumes_and_force_rebuilds_only_the_folder(built):
    output_dir, folder = built
    runs = output_dir / "runs" / NAME
    stamps = {
        path: path.stat().st_mtime_ns for path in (runs / "ea.done", runs / "vanilla.done", folder / "README.md")
    }
    build_checkpoints.build(build_checkpoints.CHECKPOINTS[NAME], output_dir, smoke=SMOKE)
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items())  # nothing redone
    build_checkpoints.build(build_checkpoints.CHECKPOINTS[NAME], output_dir, parallel=True, smoke=SMOKE, force=True)
    assert (runs / "ea.done").stat().st_mtime_ns == stamps[runs / "ea.done"]  # not trained again
    assert (folder / "README.md").stat().st_mtime_ns != stamps[folder / "README.md"]
    with pytest.raises(ValueError, match="other smoke settings"):
        build_checkpoints.build(build_checkpoints.CHECKPOINTS[NAME], output_dir, smoke={"num_train_epochs": 3})


def test_dry_run_verifies_without_ea_hf_and_lists_the_files(built, capsys, monkeypatch):
    output_dir, folder = built
    monkeypatch.chdir(output_dir)
    assert push_to_hub.main([NAME, "--repo-id", REPO, "--dry-run"]) is None  # a relative folder
    out = capsys.readouterr().out
    assert "3 widget examples run without ea_hf" in out and "model.safetensors" in out and "Dry run" in out


def broken_copy(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / NAME
    shutil.copytree(folder, copy)
    return copy


def edit_card(folder: Path, edit) -> None:
    card = ModelCard.load(folder / "README.md")
    data = card.data.to_dict()
    edit(data)
    card.content = f"---\n{yaml.safe_dump(data, sort_keys=False)}---\n{card.text}"
    card.save(folder / "README.md")


def refusal(folder: Path, capsys, repo_id: str = REPO) -> str:
    with pytest.raises(SystemExit) as exit_info:
        push_to_hub.main([str(folder), "--repo-id", repo_id, "--dry-run"])
    assert exit_info.value.code == 1
    return capsys.readouterr().err


def test_refuses_a_card_without_the_tags(built, tmp_path, capsys):
    folder = broken_copy(built[1], tmp_path)
    edit_card(folder, lambda data: data.update(tags=["custom_code"]))
    assert "evolving-attention" in refusal(folder, capsys)


def test_refuses_a_missing_code_file(built, tmp_path, capsys):
    folder = broken_copy(built[1], tmp_path)
    (folder / "modeling_ea_dc_transformer.py").unlink()
    assert "modeling_ea_dc_transformer.py is missing" in refusal(folder, capsys)


def test_refuses_a_card_written_for_another_repository(built, capsys):
    assert "rebuild the card" in refusal(built[1], capsys, repo_id=f"someone/{NAME}")


def test_refuses_a_card_whose_outputs_the_model_does_not_give(built, tmp_path, capsys):
    folder = broken_copy(built[1], tmp_path)

    def wrong_score(data):
        data["widget"][0]["output"][0]["score"] = round(1.5 - data["widget"][0]["output"][0]["score"], 4)

    edit_card(folder, wrong_score)
    assert "does not reproduce the card" in refusal(folder, capsys)


def test_upload_creates_the_repository_branch_and_commit(built, monkeypatch):
    calls = []
    monkeypatch.setattr(
        HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("repo", repo_id, kw)) or repo_id
    )
    monkeypatch.setattr(HfApi, "create_branch", lambda self, repo_id, **kw: calls.append(("branch", repo_id, kw)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)) or "commit-url")
    argv = [str(built[1]), "--repo-id", REPO, "--private", "--revision", "v1", "--commit-message", "first"]
    assert push_to_hub.main(argv) == "commit-url"
    assert calls[0] == ("repo", REPO, {"private": True, "exist_ok": True})
    assert calls[1] == ("branch", REPO, {"branch": "v1", "exist_ok": True})
    assert calls[2][1] | {"folder_path": None} == {
        "folder_path": None,
        "repo_id": REPO,
        "revision": "v1",
        "commit_message": "first",
    }


@pytest.mark.parametrize("name", list(build_checkpoints.CHECKPOINTS))
def test_every_card_renders_its_numbers(name, tmp_path):
    """The card of each checkpoint, from made-up results (the real ones take the builds of `make checkpoints`)."""
    checkpoint = build_checkpoints.CHECKPOINTS[name]
    keys = [key for key, *_ in model_cards.CARDS[name]["metrics"]]
    results = {
        "ea": {key: 0.5 + i / 100 for i, key in enumerate(keys)} | {"train_seconds": 125.0},
        "vanilla": {key: 0.25 for key in keys},
        "training": {"ea": {"wall_seconds": 130.0, "threads": 1}},
        "test_cosine_ea_vs_vanilla_mean": 0.9,
        "test_images": 1000,
    }
    widget = [{"text": "a fine film", "output": [{"label": "positive", "score": 0.75}]}]
    card = model_cards.make_card(checkpoint, results, widget, {"ea_alpha": 0.1, "ea_kernel_size": 3})
    text = str(card)
    assert "| 0.2500 | 0.5000 | +0.2500 |" in text and "2 min 05 s (1 CPU thread)" in text
    assert card.data.pipeline_tag == checkpoint.task and "{" not in card.text.split("```")[0]
    assert "`a fine film` → positive 0.750" in text
