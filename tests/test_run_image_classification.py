"""`scripts/examples/run_image_classification.py` end to end on a tiny vanilla ViT checkpoint (32x32 images, patch 8,
hidden 32, 2 layers, 4 heads) and tiny image folders (PNGs of random colours and sizes, some grey): EA (converted on
the fly, raster and grid convolutions) and vanilla models, top-1/top-5 accuracy, the transforms without torchvision,
another image size (interpolated position embeddings), argument files, and the bad-input errors before training."""

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from huggingface_hub import ModelCard
from PIL import Image
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

from scripts.examples.run_image_classification import (
    DataTrainingArguments,
    ImageTransforms,
    accuracy_metrics,
    main,
    parse_args,
    random_resized_crop_box,
    store_position_embeddings,
)
from scripts.release import push_to_hub


pytestmark = pytest.mark.usefixtures("one_thread", "restore_library_logging")


CLASSES = ("cat", "dog", "eel", "fox", "gnu")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny vanilla ViTForImageClassification with its image processor (32x32)."""
    folder = tmp_path_factory.mktemp("tiny-vit")
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37,
    )  # fmt: skip
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def write_images(folder: Path, classes, count: int, seed: int) -> Path:
    """`count` PNGs a class, of the class's colour (plus noise) and random sizes; every third one grey."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        colour = np.array([(index * 50) % 256, (255 - index * 60) % 256, (index * 110) % 256])
        for i in range(count):
            height, width = rng.integers(20, 48, size=2)
            pixels = np.clip(colour + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            (image.convert("L") if i % 3 == 0 else image).save(folder / name / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    return {
        "train": write_images(root / "train", CLASSES[:3], 6, seed=0),
        "validation": write_images(root / "validation", CLASSES[:3], 2, seed=1),
        "train5": write_images(root / "train5", CLASSES, 4, seed=2),
        "validation5": write_images(root / "validation5", CLASSES, 2, seed=3),
    }


def image_args(checkpoint, output_dir, *extra, train=None, validation=None):
    """Arguments of a small run on the tiny model (batch 8, at most 3 steps)."""
    argv = [
        "--model_name_or_path", str(checkpoint), "--output_dir", str(output_dir),
        "--cache_dir", str(Path(output_dir).parent / "cache"), "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "16", "--learning_rate", "1e-3", "--max_steps", "3", "--report_to", "none",
        "--disable_tqdm", "true", "--use_cpu", "true", "--dataloader_pin_memory", "false",
        "--ignore_mismatched_sizes", "true",  # the checkpoint's head has 2 labels
    ]  # fmt: skip
    if train is not None:
        argv += ["--train_dir", str(train)]
    if validation is not None:
        argv += ["--validation_dir", str(validation)]
    return argv + list(extra)


def results(output_dir: Path, split: str) -> dict:
    return json.loads((output_dir / f"{split}_results.json").read_text())


def test_ea_end_to_end_five_classes(checkpoint, images, tmp_path):
    output_dir = tmp_path / "out"
    argv = image_args(
        checkpoint, output_dir, "--do_train", "--do_eval", "--ea_alpha", "0.2",
        train=images["train5"], validation=images["validation5"],
    )  # fmt: skip
    returned = main(argv)
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "ea_vit" and config["architectures"] == ["EAViTForImageClassification"]
    assert config["auto_map"]["AutoModelForImageClassification"].endswith("EAViTForImageClassification")
    assert config["ea_alpha"] == 0.2 and config["id2label"] == {str(i): name for i, name in enumerate(CLASSES)}
    assert {"modeling_ea_vit.py", "preprocessor_config.json", "model.safetensors"} <= set(os.listdir(output_dir))
    train, evaluation, combined = (results(output_dir, split) for split in ("train", "eval", "all"))
    assert train["train_samples"] == 20 and "train_loss" in train
    assert evaluation["eval_samples"] == 10
    assert 0.0 <= evaluation["eval_accuracy"] <= evaluation["eval_top5_accuracy"] == 1.0  # 5 classes: top-5 = all
    assert combined == {**train, **evaluation} and returned == combined
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 3
    card = (output_dir / "README.md").read_text()
    assert "evolving-attention" in card and "image-classification" in card
    reloaded = transformers.AutoModelForImageClassification.from_pretrained(output_dir)
    assert type(reloaded).__name__ == "EAViTForImageClassification"


def test_vanilla_three_classes_no_top5(checkpoint, images, tmp_path):
    output_dir = tmp_path / "out"
    argv = image_args(
        checkpoint, output_dir, "--do_train", "--do_eval", "--model_type", "vanilla",
        train=images["train"], validation=images["validation"],
    )  # fmt: skip
    main(argv)
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "vit" and config["architectures"] == ["ViTForImageClassification"]
    evaluation = results(output_dir, "eval")
    assert "eval_accuracy" in evaluation and "eval_top5_accuracy" not in evaluation
    assert (output_dir / "preprocessor_config.json").is_file()


def test_grid_conv_other_image_size_and_train_val_split(checkpoint, images, tmp_path):
    """`--ea_conv grid` at 48x48 (a 6x6 patch grid, interpolated position embeddings), validation held out."""
    output_dir = tmp_path / "out"
    argv = image_args(
        checkpoint, output_dir, "--do_train", "--do_eval", "--ea_conv", "grid", "--image_size", "48",
        "--train_val_split", "0.25", "--max_steps", "2", train=images["train"],
    )  # fmt: skip
    main(argv)
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "ea_vit" and config["ea_conv"] == "grid" and config["image_size"] == 48
    processor = json.loads((output_dir / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 48, "width": 48}
    # the saved model and processor work together as they are
    predictions = transformers.pipeline("image-classification", model=str(output_dir))(Image.new("RGB", (40, 60)))
    assert [p["label"] for p in predictions] and set(p["label"] for p in predictions) <= set(
        config["id2label"].values()
    )
    classifier = transformers.pipeline("image-classification", model=str(output_dir))
    for mode in ("L", "RGBA"):  # the saved processor converts them to RGB
        assert len(classifier(Image.new(mode, (40, 60)))) == len(predictions)
    assert results(output_dir, "eval")["eval_samples"] == 5  # 25% of 18 images, rounded up
    assert results(output_dir, "train")["train_samples"] == 13


def test_stored_position_embeddings_give_the_interpolated_outputs(checkpoint, tmp_path):
    model = ViTForImageClassification.from_pretrained(checkpoint).eval()
    pixel_values = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        interpolated = model(pixel_values, interpolate_pos_encoding=True).logits
        store_position_embeddings(model, 48)
        stored = model(pixel_values).logits
    assert torch.equal(stored, interpolated)
    assert model.base_model.embeddings.position_embeddings.shape[1] == 1 + 6 * 6 and model.config.image_size == 48
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(ViTForImageClassification.from_pretrained(tmp_path).eval()(pixel_values).logits, stored)


def test_transforms_without_torchvision(checkpoint, images):
    processor = transformers.AutoImageProcessor.from_pretrained(checkpoint)
    grey = Image.fromarray(np.full((20, 40), 255, dtype=np.uint8))  # grey, not square
    batch = {"image": [grey, grey.convert("RGB")], "label": [1, 0]}
    for train in (True, False):
        transform = ImageTransforms(processor, None, 3, "image", "label", {0: 0, 1: 1}, train=train)
        out = transform(batch)
        assert out["labels"] == [1, 0]
        for pixels in out["pixel_values"]:
            assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32
            assert torch.allclose(pixels, torch.ones(()))  # white, normalised with mean 0.5 and std 0.5
    rng = random.Random(0)
    for _ in range(100):
        left, top, right, bottom = random_resized_crop_box(40, 20, rng)
        assert 0 <= left < right <= 40 and 0 <= top < bottom <= 20


def test_accuracy_metrics():
    logits = np.array([[0.0, 1, 2, 3, 4, 5], [5.0, 4, 3, 2, 1, 0], [0.0, 0, 9, 0, 0, 0]])
    metrics = accuracy_metrics(logits, np.array([5, 5, 2]))
    assert metrics == {"accuracy": pytest.approx(2 / 3), "top5_accuracy": pytest.approx(2 / 3)}
    assert accuracy_metrics(logits[:, :3], np.array([2, 0, 1])) == {"accuracy": pytest.approx(2 / 3)}


def test_an_argument_file_gives_the_arguments_of_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = {
        "model_name_or_path": "m", "train_dir": "images/train", "output_dir": "o", "do_train": True,
        "ea_conv": "grid", "image_size": 48, "train_val_split": 0.25, "remove_unused_columns": False,
    }  # fmt: skip
    (tmp_path / "args.json").write_text(json.dumps(values))
    argv = [arg for key, value in values.items() for arg in (f"--{key}", str(value))]
    model_args, data_args, training_args = parse_args([str(tmp_path / "args.json")])
    assert (model_args.ea_conv, data_args.image_size, training_args.remove_unused_columns) == ("grid", 48, False)
    assert (model_args, data_args, training_args) == parse_args(argv)


def test_bad_inputs_fail_before_training(checkpoint, images, tmp_path):
    output_dir = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    (tmp_path / "classless").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "classless" / "0.png")
    cases = [
        (dict(train=tmp_path / "missing"), FileNotFoundError, "does not exist"),
        (dict(train=tmp_path / "empty"), ValueError, "holds no images"),
        (dict(train=tmp_path / "classless"), ValueError, "outside class subfolders"),
        (dict(train=images["train"], validation=images["validation5"]), ValueError, "labels the training data lacks"),
        (dict(validation=images["validation"]), ValueError, "--train_dir is needed"),
    ]
    for folders, error, message in cases:
        with pytest.raises(error, match=message):
            main(image_args(checkpoint, output_dir, "--do_train", "--do_eval", **folders))
    with pytest.raises(ValueError, match="no column 'picture'"):
        main(image_args(checkpoint, output_dir, "--do_train", "--image_column_name", "picture", train=images["train"]))
    with pytest.raises(ValueError, match="Need either a dataset name"):
        DataTrainingArguments()
    assert not output_dir.exists()  # nothing was trained or written


def test_the_folder_works_without_ea_hf_and_is_ready_for_the_hub(checkpoint, images, tmp_path):
    output_dir = tmp_path / "out"
    argv = image_args(checkpoint, output_dir, "--do_train", "--do_eval", "--hub_model_id", "org/ea-vit",
                      "--card_dataset", "org/shapes", train=images["train"])  # fmt: skip
    main(argv)
    card = ModelCard.load(output_dir / "README.md").data
    assert card.pipeline_tag == "image-classification" and card.license == "apache-2.0" and len(card.widget) == 2
    push_to_hub.verify(output_dir, "org/ea-vit")  # runs the widget in an interpreter without ea_hf
