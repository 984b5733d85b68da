"""A mistyped local model path fails at once, naming the folder and the fix (`ea_hf.check_model_source`): in
`ModelArguments` (the example scripts' `--model_name_or_path`, `--config_name`, `--tokenizer_name`, checked when
parsed) and in `convert_checkpoint`, before any network access; a Hub id is left to the Hub code."""

import os

import pytest
from transformers import HfArgumentParser

from ea_hf import check_model_source, convert_checkpoint
from ea_hf.finetuning import ModelArguments


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working folder holding `checkpoints/ea-minilm-l6/`; Hub access fails loudly."""
    (tmp_path / "checkpoints" / "ea-minilm-l6").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.mark.parametrize(
    "mistyped",
    ["checkpoints/ea-minlm-l6", "./ea-minilm-l6", "checkpoints\\ea-minilm-l6", "a/b/c", "~/no-such-ea-folder"],
)
def test_a_mistyped_local_path_names_the_folder_and_the_fix(workdir, mistyped):
    with pytest.raises(FileNotFoundError) as error:
        check_model_source(mistyped)
    message = str(error.value)
    assert message.startswith(f"--model_name_or_path {mistyped}: no such folder")
    assert "a Hub id looks like org/name" in message
    if mistyped.startswith("checkpoints/"):
        assert f"{workdir / 'checkpoints'} holds ea-minilm-l6" in message


def test_an_absolute_path_is_local(workdir):
    missing = str(workdir / "checkpoints" / "missing")
    with pytest.raises(FileNotFoundError, match=f"--config_name {missing}: no such folder"):
        check_model_source(missing, what="--config_name")
    assert check_model_source(str(workdir / "checkpoints")) == str(workdir / "checkpoints")


def test_existing_folders_and_hub_ids_pass(workdir, monkeypatch):
    assert check_model_source("checkpoints/ea-minilm-l6") == "checkpoints/ea-minilm-l6"
    assert check_model_source(workdir / "checkpoints") == str(workdir / "checkpoints")
    monkeypatch.setenv("HOME", str(workdir))
    assert check_model_source("~/checkpoints") == os.path.join(str(workdir), "checkpoints")  # as from_pretrained needs
    for hub_id in ("google-bert/bert-base-uncased", "bert-base-uncased", "ea-hf/ea-minilm-l6"):
        assert check_model_source(hub_id) == hub_id


def test_model_arguments_check_every_source_when_parsed(workdir):
    parser = HfArgumentParser(ModelArguments)
    with pytest.raises(FileNotFoundError, match="--model_name_or_path /no/such/model: no such folder"):
        parser.parse_args_into_dataclasses(["--model_name_or_path", "/no/such/model"])
    for option in ("--config_name", "--tokenizer_name"):
        argv = ["--model_name_or_path", "checkpoints/ea-minilm-l6", option, "checkpoints/typo"]
        with pytest.raises(FileNotFoundError, match=f"{option} checkpoints/typo: no such folder"):
            parser.parse_args_into_dataclasses(argv)
    (args,) = parser.parse_args_into_dataclasses(["--model_name_or_path", "google-bert/bert-base-uncased"])
    assert args.model_name_or_path == "google-bert/bert-base-uncased"


def test_convert_checkpoint_checks_its_source(workdir):
    with pytest.raises(FileNotFoundError, match="source checkpoints/ea-minlm: no such folder"):
        convert_checkpoint("checkpoints/ea-minlm", str(workdir / "out"))
    assert not (workdir / "out").exists()
