#!/usr/bin/env python
"""Fine-tune an image classifier (ViT) on a Hub image dataset or on your own image folders, with evolving attention:
transformers' `examples/pytorch/image-classification/run_image_classification.py`, same arguments and outputs, plus
`--model_type`, the EA switches (`--ea_alpha`, `--ea_beta`, `--ea_kernel_size`, `--ea_activation`, `--ea_conv`) and
`--image_size`.

    python scripts/examples/run_image_classification.py --model_name_or_path google/vit-base-patch16-224-in21k \\
        --train_dir data/fashion_mnist/train --validation_dir data/fashion_mnist/validation \\
        --do_train --do_eval --per_device_train_batch_size 32 --learning_rate 2e-5 --num_train_epochs 3 \\
        --output_dir /tmp/fashion-mnist

fine-tunes EA-ViT, converted on the fly from the vanilla checkpoint (`--ea_conv raster|grid` picks the convolution
over the attention maps; `--model_type vanilla`: transformers' ViT, for comparisons); an EA checkpoint loads as it
is. Arguments come from the command line or one `.json`/`.yaml` file; `accelerate launch ...` trains on several
processes.

Data: `--dataset_name` (e.g. `imagenet-1k`, `--dataset_config_name`) loads a dataset from the Hub; or `--train_dir`
and `--validation_dir`, image folders in the `imagefolder` layout (`<dir>/<class>/<image>`, as
`python -m scripts.data.prepare_data fashion_mnist` writes them). Columns `--image_column_name` (`image`) and
`--label_column_name` (`label`); without a validation split, `--train_val_split` (0.15) of the training data is held
out. A missing or empty folder, images outside class subfolders, a missing column, a validation label the training
data lacks and a single class are refused before anything is trained. `--max_train_samples`/`--max_eval_samples`
take that many rows after shuffling with `--seed` (as transformers does).

Transforms (PIL and numpy: no torchvision): training takes a random resized crop (scale 0.08-1, aspect 3/4-4/3, as
torchvision's `RandomResizedCrop`) and a random horizontal flip; evaluation resizes and takes the centre crop
(`Resize` + `CenterCrop`); both rescale to [0, 1] and normalise with the image processor's `image_mean`/`image_std`.
Grey and RGBA images become RGB for a 3-channel model (and the saved image processor converts them too:
`do_convert_rgb`). The size is the image processor's (`height`/`width`, or
`shortest_edge`), or `--image_size`; when it differs from the model's `image_size`, the model is trained with
`interpolate_pos_encoding=True`, and saved with its position embeddings interpolated to that size once and for all
(`config.image_size` updated), so that the saved model and image processor work together as they are (`pipeline`).

Metrics (numpy): `accuracy` (top-1), and `top5_accuracy` with 5 classes or more. Outputs in `--output_dir`: the model
(an EA model with its code and `auto_map`), the image processor, `train_results.json`, `eval_results.json`,
`all_results.json`, `trainer_state.json` and a model card. A run resumes from the last complete checkpoint in
`--output_dir`.

The model card (also the one `--push_to_hub` uploads) has what `scripts/release/push_to_hub.py` checks: the
`pipeline_tag`, `--license` (apache-2.0), the dataset (`--dataset_name`, or `--card_dataset` for image folders) and,
with `--hub_model_id`, widget examples: the first `--widget_examples` validation images under `examples/`, with the
outputs the trained model gives. EA switches with `--model_type vanilla` are refused before anything is trained.
"""

import logging
import math
import os
import random
import sys
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
import transformers
from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    EvalPrediction,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)

from ea_hf.finetuning import (
    ModelArguments,
    check_launch,
    detect_last_checkpoint,
    load_model,
    setup_logging,
    update_model_card,
)


logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(ImageFolder.EXTENSIONS)
CROP_SCALE = (0.08, 1.0)  # torchvision's RandomResizedCrop defaults
CROP_RATIO = (3 / 4, 4 / 3)
TOP_K = 5


@dataclass
class DataTrainingArguments:
    """What data to train and evaluate on (transformers' run_image_classification.py arguments), plus
    `--image_size`."""

    dataset_name: str | None = field(
        default=None, metadata={"help": "The name of a Hub image dataset to use (via the datasets library)."}
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The configuration name of the Hub dataset."}
    )
    train_dir: str | None = field(
        default=None, metadata={"help": "A folder of training images, one subfolder per class."}
    )
    validation_dir: str | None = field(
        default=None, metadata={"help": "A folder of validation images, one subfolder per class."}
    )
    train_val_split: float | None = field(
        default=0.15, metadata={"help": "Fraction of the training data held out for validation when there is none."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only N training examples, after shuffling (debugging, quicker training)."}
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={"help": "Use only N evaluation examples, after shuffling (debugging, quicker training)."},
    )
    image_column_name: str = field(default="image", metadata={"help": "The column holding the images."})
    license: str = field(default="apache-2.0", metadata={"help": "The model card's license (a Hub license id)."})
    card_dataset: str | None = field(
        default=None,
        metadata={"help": "The Hub dataset id the model card names for --train_dir data (--dataset_name: that one)."},
    )
    widget_examples: int = field(
        default=2,
        metadata={
            "help": "Images of the card's widget (the first validation ones, else training; needs --hub_model_id)."
        },
    )
    label_column_name: str = field(default="label", metadata={"help": "The column holding the labels."})
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Square size the images are cropped to (default: the image processor's); position embeddings "
            "are interpolated when it differs from the model's image_size."
        },
    )

    def __post_init__(self):
        if self.dataset_name is None and self.train_dir is None and self.validation_dir is None:
            raise ValueError("Need either a dataset name (--dataset_name) or image folders (--train_dir).")
        if self.train_val_split is not None and not 0.0 <= self.train_val_split < 1.0:
            raise ValueError(f"--train_val_split must be in [0, 1), got {self.train_val_split}.")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"--image_size must be positive, got {self.image_size}.")


def check_image_folder(folder: str, split: str) -> None:
    """Clear errors for a missing folder, a folder without images, and images outside class subfolders (the class
    is the subfolder's name)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"The {split} folder {folder} does not exist.")
    classes, loose = set(), []
    for root, _, files in os.walk(folder):
        images = [name for name in files if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS]
        if images and os.path.samefile(root, folder):
            loose += images
        elif images:
            classes.add(os.path.relpath(root, folder).split(os.sep)[0])
    if loose:
        raise ValueError(
            f"The {split} folder {folder} holds images outside class subfolders (e.g. {sorted(loose)[0]}): put "
            "each class's images in a subfolder named after the class (<folder>/<class>/<image>)."
        )
    if not classes:
        raise ValueError(
            f"The {split} folder {folder} holds no images (extensions: .png, .jpg, ...); expected "
            "<folder>/<class>/<image>."
        )


def load_raw_datasets(data_args, model_args, training_args) -> datasets.DatasetDict:
    """The image folders if any are given, else `--dataset_name` from the Hub."""
    if data_args.train_dir is not None or data_args.validation_dir is not None:
        if data_args.train_dir is None:
            raise ValueError("--train_dir is needed with image folders: the label set comes from the training data.")
        folders = {"train": data_args.train_dir, "validation": data_args.validation_dir}
        folders = {split: folder for split, folder in folders.items() if folder is not None}
        for split, folder in folders.items():
            check_image_folder(folder, split)
            logger.info(f"Loading the {split} images from {folder}")
        data_files = {split: os.path.join(folder, "**") for split, folder in folders.items()}
        return datasets.load_dataset("imagefolder", data_files=data_files, cache_dir=model_args.cache_dir)
    try:
        return datasets.load_dataset(
            data_args.dataset_name,
            data_args.dataset_config_name,
            cache_dir=model_args.cache_dir,
            token=model_args.token,
        )
    except ConnectionError as error:
        raise ConnectionError(
            f"Could not load {data_args.dataset_name} ({data_args.dataset_config_name}) from the Hub: {error}. "
            "Offline, give the images as folders with --train_dir/--validation_dir."
        ) from error


def check_columns(raw: datasets.DatasetDict, data_args) -> None:
    """Clear errors for a missing image or label column, and an image column that holds no images."""
    for split, dataset in raw.items():
        needed = [data_args.image_column_name, data_args.label_column_name]
        missing = [name for name in needed if name not in dataset.column_names]
        if missing:
            raise ValueError(
                f"The {split} data has no column {', '.join(map(repr, missing))} (columns: {dataset.column_names}); "
                "pick them with --image_column_name and --label_column_name."
            )
        if not isinstance(dataset.features[data_args.image_column_name], datasets.Image):
            raise ValueError(
                f"The {split} column {data_args.image_column_name!r} should hold images, it holds "
                f"{dataset.features[data_args.image_column_name]}."
            )


def training_labels(train: datasets.Dataset, column: str) -> list:
    """The label set: a ClassLabel's names in their order (image folders: the class subfolders, sorted), else the
    training data's label values, sorted."""
    feature = train.features[column]
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else sorted(train.unique(column))


def check_labels(raw: datasets.DatasetDict, column: str, label_list: list) -> None:
    """Clear errors for a single class and for validation labels the training data lacks (an image folder's
    ClassLabel names every class folder of every split: the training rows are what count)."""
    if len(label_list) < 2:
        raise ValueError(f"The training data has a single class {label_list}: classification needs at least two.")
    seen = set(raw["train"].unique(column))
    for split, dataset in raw.items():
        if split == "train":
            continue
        unseen = set(dataset.unique(column)) - seen
        if unseen:
            feature = dataset.features[column]
            names = [feature.int2str(v) if isinstance(feature, datasets.ClassLabel) else v for v in unseen]
            trained = [feature.int2str(v) if isinstance(feature, datasets.ClassLabel) else v for v in seen]
            raise ValueError(
                f"The {split} data has labels the training data lacks: {sorted(map(str, names))} (training labels: "
                f"{sorted(map(str, trained))})."
            )


def _size_value(size, key: str):
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def transform_sizes(image_processor, image_size: int | None) -> tuple[tuple[int, int], int | tuple[int, int]]:
    """(crop size as (height, width), resize size for evaluation): `--image_size` squares, else the processor's
    `height`/`width` (evaluation resizes to it) or `shortest_edge` (evaluation resizes the shorter edge to it, then
    crops a square), as transformers' example does."""
    if image_size is not None:
        return (image_size, image_size), (image_size, image_size)
    size = image_processor.size
    shortest = _size_value(size, "shortest_edge")
    if shortest is not None:
        return (shortest, shortest), shortest
    height, width = _size_value(size, "height"), _size_value(size, "width")
    if height is None or width is None:
        raise ValueError(f"The image processor's size {dict(size)} has neither height/width nor shortest_edge.")
    return (height, width), (height, width)


def random_resized_crop_box(width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box of torchvision's `RandomResizedCrop.get_params` (scale 0.08-1, aspect ratio
    3/4-4/3, ten tries, then the centre crop at the nearest allowed aspect ratio)."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*CROP_SCALE)
        aspect_ratio = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < CROP_RATIO[0]:
        w, h = width, int(round(width / CROP_RATIO[0]))
    elif in_ratio > CROP_RATIO[1]:
        w, h = int(round(height * CROP_RATIO[1])), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def resize_and_center_crop(image: Image.Image, resize, crop: tuple[int, int], resample: int) -> Image.Image:
    """torchvision's `Resize(resize)` (an int: the shorter edge) then `CenterCrop(crop)`."""
    if isinstance(resize, int):
        width, height = image.size
        if width <= height:
            new_size = (resize, max(1, int(resize * height / width)))
        else:
            new_size = (max(1, int(resize * width / height)), resize)
    else:
        new_size = (resize[1], resize[0])
    image = image.resize(new_size, resample)
    crop_height, crop_width = crop
    width, height = image.size
    left, top = int(round((width - crop_width) / 2.0)), int(round((height - crop_height) / 2.0))
    return image.crop((left, top, left + crop_width, top + crop_height))  # pads with black where it is too small


class ImageTransforms:
    """What `Dataset.set_transform` applies: the training augmentation or the evaluation resize and crop, then
    rescaling and normalisation (see the module docstring); the labels become `labels` (model ids)."""

    def __init__(self, image_processor, image_size, num_channels, image_column, label_column, value_to_id, train):
        self.crop, self.resize = transform_sizes(image_processor, image_size)
        self.resample = int(getattr(image_processor, "resample", None) or Image.Resampling.BILINEAR)
        self.mode = "RGB" if num_channels == 3 else "L"
        self.rescale = image_processor.rescale_factor if getattr(image_processor, "do_rescale", True) else 1.0
        normalize = getattr(image_processor, "do_normalize", True)
        channels = 3 if self.mode == "RGB" else 1
        mean = image_processor.image_mean if normalize else [0.0] * channels
        std = image_processor.image_std if normalize else [1.0] * channels
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)[:channels]
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)[:channels]
        self.image_column, self.label_column = image_column, label_column
        self.value_to_id = value_to_id
        self.train = train
        self.rng = random  # seeded by set_seed, and per DataLoader worker by torch

    def augment(self, image: Image.Image) -> Image.Image:
        box = random_resized_crop_box(*image.size, self.rng)
        image = image.resize((self.crop[1], self.crop[0]), self.resample, box=box)
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if self.rng.random() < 0.5 else image

    def to_tensor(self, image: Image.Image) -> torch.Tensor:
        array = np.asarray(image, dtype=np.float32) * self.rescale
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return torch.from_numpy((array - self.mean) / self.std)

    def __call__(self, batch: dict) -> dict:
        images = [image.convert(self.mode) for image in batch[self.image_column]]
        if self.train:
            images = [self.augment(image) for image in images]
        else:
            images = [resize_and_center_crop(image, self.resize, self.crop, self.resample) for image in images]
        result = {"pixel_values": [self.to_tensor(image) for image in images]}
        if self.label_column in batch:
            result["labels"] = [self.value_to_id[value] for value in batch[self.label_column]]
        return result


def store_position_embeddings(model, image_size: int) -> None:
    """Replace a ViT's position embeddings [1, 1 + n, D] by their interpolation to square images of `image_size`
    [1, 1 + (image_size / patch) ** 2, D], as `interpolate_pos_encoding=True` computes them on every call, and set
    `config.image_size`: the model then gives the same outputs at that size without the flag."""
    embeddings = model.base_model.embeddings
    patches = (image_size // embeddings.patch_size) ** 2
    template = embeddings.position_embeddings.new_empty(1, 1 + patches, embeddings.position_embeddings.shape[-1])
    with torch.no_grad():
        table = embeddings.interpolate_pos_encoding(template, image_size, image_size).clone()
    embeddings.position_embeddings = torch.nn.Parameter(table)
    embeddings.image_size = embeddings.patch_embeddings.image_size = (image_size, image_size)
    embeddings.patch_embeddings.num_patches = patches
    model.config.image_size = image_size


def collate_fn(interpolate_pos_encoding: bool):
    """Stack `pixel_values` and `labels`; ask the model to interpolate its position embeddings when the images are
    not of its size."""

    def collate(examples: list[dict]) -> dict:
        batch = {
            "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
            "labels": torch.tensor([example["labels"] for example in examples], dtype=torch.long),
        }
        if interpolate_pos_encoding:
            batch["interpolate_pos_encoding"] = True
        return batch

    return collate


def accuracy_metrics(logits: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """Top-1 accuracy, and top-5 accuracy when there are at least 5 classes."""
    result = {"accuracy": float((np.argmax(logits, axis=-1) == references).mean())}
    if logits.shape[-1] >= TOP_K:
        top = np.argpartition(-logits, TOP_K - 1, axis=-1)[:, :TOP_K]
        result[f"top{TOP_K}_accuracy"] = float((top == references[:, None]).any(axis=-1).mean())
    return result


class CardTrainer(Trainer):
    """A Trainer whose model card (also the one `push_to_hub` writes) has `card_metadata` too: the pipeline_tag and
    widget that the Hub and `scripts/release/push_to_hub.py` read."""

    card_metadata: dict = {}

    def create_model_card(self, **kwargs):
        super().create_model_card(**kwargs)
        if self.is_world_process_zero():
            update_model_card(self.args.output_dir, self.card_metadata)


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments]:
    """The arguments from the command line (`argv`, default `sys.argv[1:]`), or from one `.json`/`.yaml` file."""
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(yaml_file=os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args = parse_args(argv)

    setup_logging(training_args, logger)
    check_launch(training_args)  # several processes launched must form one group

    if training_args.remove_unused_columns:
        logger.info("Setting --remove_unused_columns false: the transforms need the image and label columns.")
        training_args.remove_unused_columns = False
    last_checkpoint = detect_last_checkpoint(training_args)
    set_seed(training_args.seed)

    raw = load_raw_datasets(data_args, model_args, training_args)
    if "train" not in raw:
        raise ValueError(f"The data has no train split (splits: {list(raw)}): the label set comes from it.")
    split_fraction = data_args.train_val_split
    if "validation" not in raw and split_fraction:
        held_out = raw["train"].train_test_split(split_fraction, seed=training_args.seed)
        raw["train"], raw["validation"] = held_out["train"], held_out["test"]
        logger.info(f"No validation split: holding out {split_fraction} of the training data for validation.")
    if training_args.do_eval and "validation" not in raw:
        raise ValueError("--do_eval requires a validation dataset (--validation_dir, or --train_val_split > 0).")
    raw = datasets.DatasetDict({split: raw[split] for split in ("train", "validation") if split in raw})
    check_columns(raw, data_args)
    label_column = data_args.label_column_name
    label_list = training_labels(raw["train"], label_column)
    check_labels(raw, label_column, label_list)
    class_label = isinstance(raw["train"].features[label_column], datasets.ClassLabel)
    values = range(len(label_list)) if class_label else label_list
    value_to_id = {value: index for index, value in enumerate(values)}
    label2id = {str(label): index for index, label in enumerate(label_list)}
    id2label = {index: str(label) for index, label in enumerate(label_list)}
    logger.info(f"{len(label_list)} classes: {label_list}")

    image_processor = AutoImageProcessor.from_pretrained(
        model_args.tokenizer_name or model_args.model_name_or_path,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
    )
    model = load_model(
        model_args,
        AutoModelForImageClassification,
        num_labels=len(label_list),
        label2id=label2id,
        id2label=id2label,
    )
    # The loss is a mean over the batch: without the flag, Trainer takes a vanilla head's loss for a sum and scales
    # it wrong under gradient accumulation (EA heads set it themselves; set here, EA-vs-vanilla comparisons are fair)
    model.accepts_loss_kwargs = False
    crop, _ = transform_sizes(image_processor, data_args.image_size)
    model_size = model.config.image_size
    model_size = tuple(model_size) if isinstance(model_size, (list, tuple)) else (model_size, model_size)
    interpolate = crop != model_size
    if interpolate:
        logger.info(
            f"Images of {crop[0]}x{crop[1]}, model of {model_size[0]}x{model_size[1]}: interpolating the position "
            "embeddings (interpolate_pos_encoding=True)."
        )
    if data_args.image_size is not None:  # the saved processor prepares images of the size the model was tuned on
        image_processor.size = {"height": data_args.image_size, "width": data_args.image_size}
        if getattr(image_processor, "crop_size", None) is not None:
            image_processor.crop_size = {"height": data_args.image_size, "width": data_args.image_size}
    if model.config.num_channels == 3:  # the saved processor (pipeline) turns grey and RGBA images into RGB too
        image_processor.do_convert_rgb = True

    # --max_*_samples: that many rows after shuffling, as transformers' example does
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples}
    for split, limit in limits.items():
        if split in raw and limit is not None:
            raw[split] = raw[split].shuffle(seed=training_args.seed).select(range(min(limit, len(raw[split]))))
    for split in raw:
        transforms = ImageTransforms(
            image_processor, data_args.image_size, model.config.num_channels, data_args.image_column_name,
            label_column, value_to_id, train=split == "train",
        )  # fmt: skip
        raw[split].set_transform(transforms)
    train_dataset = raw["train"]
    eval_dataset = raw.get("validation")

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        outputs = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return accuracy_metrics(outputs, prediction.label_ids)

    trainer = CardTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset if training_args.do_train else None,
        eval_dataset=eval_dataset if training_args.do_eval else None,
        compute_metrics=compute_metrics,
        processing_class=image_processor,
        data_collator=collate_fn(interpolate),
    )

    results = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or last_checkpoint)
        metrics = train_result.metrics
        metrics["train_samples"] = len(train_dataset)
        trainer.save_model()  # an EA model with its code files and auto_map: it loads with trust_remote_code=True
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)
        if interpolate and crop[0] == crop[1]:  # the saved folder then runs at its processor's size (`pipeline`)
            store_position_embeddings(trainer.model, crop[0])
            trainer.save_model()
        elif interpolate:  # transformers' ViT interpolates from a square grid only
            logger.warning(f"Saved for {model_size}: call it with interpolate_pos_encoding=True on {crop} images.")

    if training_args.do_eval:
        logger.info("*** Evaluate ***")
        metrics = trainer.evaluate()
        metrics["eval_samples"] = len(eval_dataset)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)

    widget, repo = [], training_args.hub_model_id
    if training_args.do_train and repo is not None and trainer.is_world_process_zero():
        # images of the repository, with the outputs the saved folder gives (push_to_hub.py checks them again)
        classifier = transformers.pipeline(
            "image-classification", model=training_args.output_dir, trust_remote_code=True, device=model.device
        )
        examples = raw["validation"] if "validation" in raw else raw["train"]
        examples.reset_format()  # the images as they are (training and evaluation are done)
        os.makedirs(os.path.join(training_args.output_dir, "examples"), exist_ok=True)
        for index in range(min(data_args.widget_examples, len(examples))):
            name = f"examples/{index}.png"
            path = os.path.join(training_args.output_dir, name)
            examples[index][data_args.image_column_name].save(path)
            outputs = classifier(path, top_k=3)
            widget.append(
                {
                    "src": f"https://huggingface.co/{repo}/resolve/main/{name}",
                    "output": [{"label": o["label"], "score": round(o["score"], 4)} for o in outputs],
                }
            )
    trainer.card_metadata = {"pipeline_tag": "image-classification", "widget": widget}
    kwargs = {
        "finetuned_from": model_args.model_name_or_path,
        "tasks": "image-classification",
        "tags": ["image-classification", "vision"],
        "license": data_args.license,
    }
    dataset = data_args.dataset_name or data_args.card_dataset
    if dataset is not None:
        kwargs.update(dataset=dataset, dataset_tags=dataset)
        if data_args.dataset_config_name is not None:
            kwargs["dataset_args"] = data_args.dataset_config_name
    if model_args.model_type == "ea":
        kwargs["tags"] += ["evolving-attention", "custom_code"]
    if training_args.push_to_hub:
        trainer.push_to_hub(**kwargs)
    else:
        trainer.create_model_card(**kwargs)
    return results


if __name__ == "__main__":
    main()
