"""What ea-hf's fine-tuning scripts (`scripts/examples/run_glue.py`, `run_translation.py`,
`run_image_classification.py`, `run_clm.py`) share: the model arguments with the EA switches, the model loading
(`--model_type ea` converts a vanilla checkpoint on the fly, `vanilla` trains transformers' own model for
comparisons), the logging setup, the resume logic, and the checks of a multi-process launch and of a tokenizer
against its model."""

import logging
import os
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from huggingface_hub import ModelCard
from transformers import AutoConfig, PreTrainedModel
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .model_source import check_model_source
from .registration import AUTO_CLASSES, ea_model_classes


if TYPE_CHECKING:
    from transformers import TrainingArguments  # needs accelerate, which the core install lacks


logger = logging.getLogger(__name__)

MODEL_TYPES = ("ea", "vanilla")
EA_SWITCHES = ("ea_alpha", "ea_beta", "ea_kernel_size", "ea_activation", "ea_conv")
VOCABULARY_PADDING = 128  # a model's vocabulary may be padded up to a multiple of this (T5: 32,100 -> 32,128)


@dataclass
class ModelArguments:
    """Which model, config and processor to fine-tune from (transformers' examples' `ModelArguments`), plus the model
    type and the EA switches (None: the checkpoint's value, or the EA config default for a vanilla checkpoint).
    A model, config or tokenizer source that names a local path must exist (`ea_hf.check_model_source`): a mistyped
    folder fails here, when the arguments are parsed."""

    model_name_or_path: str = field(
        metadata={"help": "Checkpoint to start from: a local folder or a Hub id, EA or vanilla (e.g. a BERT)."}
    )
    model_type: str = field(
        default="ea",
        metadata={
            "help": "ea: the EA model (a vanilla checkpoint is converted on the fly); vanilla: transformers' own "
            "model from the same vanilla checkpoint, for comparisons."
        },
    )
    config_name: str | None = field(
        default=None, metadata={"help": "Pretrained config name or path, if not the same as model_name_or_path."}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Pretrained tokenizer name or path, if not the same as model_name_or_path."}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where to store the models and datasets downloaded from the Hub."}
    )
    model_revision: str = field(
        default="main", metadata={"help": "The model version to use (a branch name, tag name or commit id)."}
    )
    token: str | None = field(
        default=None, metadata={"help": "Hub token for private models and datasets (default: the stored login)."}
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow custom code from the Hub (not needed for EA models: ea_hf registers them)."},
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Load a checkpoint whose head has another shape (e.g. another number of labels)."},
    )
    ea_alpha: float | None = field(default=None, metadata={"help": "EA: weight of the convolution branch, in [0, 1]."})
    ea_beta: float | None = field(
        default=None, metadata={"help": "EA: weight of the previous layer's attention map, in [0, 1]."}
    )
    ea_kernel_size: int | None = field(
        default=None, metadata={"help": "EA: odd kernel size of the convolution over the (query, key) plane."}
    )
    ea_activation: str | None = field(
        default=None, metadata={"help": "EA: activation of the convolution branch (relu, leaky_relu, gelu, identity)."}
    )
    ea_conv: str | None = field(
        default=None, metadata={"help": "EA-ViT only: raster (conv over the token plane) or grid (2-D patch grid)."}
    )

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"--model_type must be one of {MODEL_TYPES}, got {self.model_type!r}.")
        given = [f"--{name}" for name in EA_SWITCHES if getattr(self, name) is not None]
        if self.model_type == "vanilla" and given:
            raise ValueError(
                f"{', '.join(given)} with --model_type vanilla: transformers' own model has no evolving attention. "
                f"Drop {'it' if len(given) == 1 else 'them'}, or use --model_type ea."
            )
        for name in ("model_name_or_path", "config_name", "tokenizer_name"):
            if getattr(self, name) is not None:
                setattr(self, name, check_model_source(getattr(self, name), what=f"--{name}"))


def setup_logging(training_args: "TrainingArguments", script_logger: logging.Logger) -> None:
    """The logging of transformers' example scripts: one format on stdout, info by default, the process's log level
    for `script_logger`, ea_hf's loggers (`load_model` and `detect_last_checkpoint` log there), transformers and
    datasets; then the process and the training arguments are logged."""
    import datasets  # the examples extra
    import transformers

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if training_args.should_log:
        # The default of training_args.log_level is passive, so we set log level at info here to have that default.
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    script_logger.setLevel(log_level)
    logging.getLogger("ea_hf").setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    script_logger.warning(
        f"Process rank: {training_args.process_index}, device: {training_args.device}, n_gpu: {training_args.n_gpu}, "
        f"distributed training: {training_args.parallel_mode.value == 'distributed'}, "
        f"16-bits training: {training_args.fp16 or training_args.bf16}"
    )
    script_logger.info(f"Training/evaluation parameters {training_args}")


def check_launch(training_args: "TrainingArguments") -> None:
    """Raise a `ValueError` when a launcher started several processes (`WORLD_SIZE` > 1) that did not form one
    distributed group: each would train the whole model alone and all would write the same `output_dir`. On a
    machine without GPUs, transformers sets the group up only with `--use_cpu true`:

        accelerate launch --multi_gpu --num_processes 2 scripts/examples/run_glue.py ... --use_cpu true

    (`--multi_gpu` starts the processes through torchrun, which then join on gloo; accelerate's `--cpu` launcher
    starts a single process unless MPI is configured with `--mpirun_hostfile`.)"""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training_args.world_size != launched:
        raise ValueError(
            f"{launched} processes were launched but form a group of {training_args.world_size}: each would train "
            "alone. Without GPUs, pass --use_cpu true (e.g. accelerate launch --multi_gpu --num_processes 2 ... "
            "--use_cpu true)."
        )


def _checkpoint_step(name: str) -> int | None:
    match = re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", name)
    return int(match.group(1)) if match else None


def detect_last_checkpoint(training_args: "TrainingArguments") -> str | None:
    """The checkpoint that `--do_train` resumes from: the last complete `checkpoint-<step>` folder in `output_dir`,
    or None (no training, no folder yet, or `--resume_from_checkpoint` given: Trainer uses that one).

    A checkpoint is complete once its `trainer_state.json` exists (Trainer writes it last): one without it was cut off
    while being written (a killed run) and is skipped with a warning, where transformers' `get_last_checkpoint` would
    resume from it and fail. Raises a `ValueError` when `output_dir` holds files but no complete checkpoint: training
    there would overwrite another run's results (transformers 5 has no `--overwrite_output_dir`).
    """
    output_dir = training_args.output_dir
    if not training_args.do_train or not os.path.isdir(output_dir):
        return None
    if training_args.resume_from_checkpoint is not None:
        logger.info(f"Resuming from --resume_from_checkpoint {training_args.resume_from_checkpoint}")
        return None
    checkpoints = sorted(
        (step, name)
        for name in os.listdir(output_dir)
        if (step := _checkpoint_step(name)) is not None and os.path.isdir(os.path.join(output_dir, name))
    )
    complete = [
        name for _, name in checkpoints if os.path.isfile(os.path.join(output_dir, name, "trainer_state.json"))
    ]
    incomplete = [name for _, name in checkpoints if name not in complete]
    if incomplete:
        logger.warning(
            f"Skipping {', '.join(incomplete)} in {output_dir}: no trainer_state.json, the run was interrupted "
            "while saving it."
        )
    if complete:
        last_checkpoint = os.path.join(output_dir, complete[-1])
        logger.info(
            f"Checkpoint detected, resuming training at {last_checkpoint}. To train from scratch instead, choose "
            "another --output_dir."
        )
        return last_checkpoint
    if os.listdir(output_dir):
        raise ValueError(
            f"Output directory {output_dir} already exists and is not empty, but holds no complete checkpoint to "
            "resume from. Choose a new --output_dir (or empty this one), or pass --resume_from_checkpoint <folder>."
        )
    return None


def ea_overrides(model_args: ModelArguments) -> dict[str, float | int | str]:
    """The EA switches given (the others stay None: the checkpoint's or the default value)."""
    return {name: getattr(model_args, name) for name in EA_SWITCHES if getattr(model_args, name) is not None}


def is_ea_config(config) -> bool:
    return config.model_type in {config_class.model_type for config_class in AUTO_CLASSES}


def load_model(model_args: ModelArguments, auto_class: type, **config_kwargs) -> PreTrainedModel:
    """Load `model_args.model_name_or_path` for `auto_class` (e.g. `AutoModelForSequenceClassification`);
    `config_kwargs` (e.g. `num_labels=3`) go to the config.

    * `--model_type ea`: the EA class of `auto_class` (`ea_hf.ea_model_classes`: for a BERT checkpoint and
      `AutoModelForSequenceClassification`, `EABertForSequenceClassification`). An EA checkpoint loads as it is; a
      vanilla checkpoint is converted on the fly. The EA switches given override the checkpoint's (or the default)
      values (the EA config checks them), before any training.
    * `--model_type vanilla`: transformers' own class (`auto_class.from_pretrained`), with transformers' default
      attention implementation (logged). An EA checkpoint is refused (and EA switches, by `ModelArguments`).

    `--config_name` replaces the checkpoint's config. Logs the class built and the weights that are new (not in the
    checkpoint), unused or resized. Raises a `ValueError` for a model type with no EA twin or no EA model for
    `auto_class`, and for an EA switch the model does not have (`--ea_conv` is ViT's only).
    """
    hub = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision, "token": model_args.token}
    remote_code = {"trust_remote_code": model_args.trust_remote_code}
    source = model_args.model_name_or_path
    config_source = model_args.config_name or source
    checkpoint_config = AutoConfig.from_pretrained(config_source, **remote_code, **hub)
    checkpoint_type = checkpoint_config.model_type
    overrides = ea_overrides(model_args)
    if model_args.model_type == "vanilla":
        if is_ea_config(checkpoint_config):
            raise ValueError(
                f"{config_source} is an EA checkpoint (model_type `{checkpoint_type}`); --model_type vanilla trains "
                "transformers' own model and needs a vanilla checkpoint (e.g. the one this was converted from). Use "
                "--model_type ea to fine-tune it."
            )
        config = AutoConfig.from_pretrained(config_source, **remote_code, **hub, **config_kwargs)
        model_class, kind, load_kwargs = auto_class, "vanilla", remote_code
    else:
        try:
            ea_model_classes(checkpoint_config)
        except ValueError as error:
            raise ValueError(f"{config_source}: {error} Use --model_type vanilla to fine-tune it as it is.") from error
        model_class = ea_model_classes(checkpoint_config, auto_class).ea  # ValueError: no EA model for auto_class
        config_class = model_class.config_class
        unknown = sorted(set(overrides) - set(config_class.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"{', '.join('--' + name for name in unknown)} does not apply to {config_class.model_type} models."
            )
        config = config_class.from_pretrained(config_source, **hub, **config_kwargs, **overrides)
        kind = f"EA, converted from `{checkpoint_type}`" if checkpoint_type != config_class.model_type else "EA"
        load_kwargs = {}
    model, loading_info = model_class.from_pretrained(
        source,
        config=config,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        output_loading_info=True,
        **load_kwargs,
        **hub,
    )
    ea_settings = {key: value for key, value in model.config.to_dict().items() if key.startswith("ea_")}
    logger.info(
        f"Built {type(model).__name__} ({kind}) from {source}: {model.num_parameters():,} parameters, "
        f"attn_implementation={model.config._attn_implementation}" + (f", {ea_settings}" if ea_settings else "")
    )
    for key, what in (("missing_keys", "new (not in the checkpoint)"), ("unexpected_keys", "unused")):
        if loading_info[key]:
            names = sorted(loading_info[key])
            logger.info(f"{len(names)} {what} weights: {', '.join(names)}")
    if loading_info["mismatched_keys"]:
        logger.warning(f"Re-initialised weights of another shape: {sorted(loading_info['mismatched_keys'])}")
    return model


def check_tokenizer(tokenizer, model, model_args: ModelArguments) -> None:
    """Refuse a tokenizer with more ids than the model has embeddings (another model's tokenizer: its ids would index
    embeddings the model does not have); warn when the model's vocabulary is much larger than the tokenizer's."""
    source = model_args.tokenizer_name or model_args.model_name_or_path
    embeddings, ids = model.get_input_embeddings().weight.shape[0], len(tokenizer)
    sizes = (
        f"the tokenizer of {source} has {ids:,} ids, the model {model_args.model_name_or_path} {embeddings:,} "
        "embeddings"
    )
    fix = (
        "Pass the model's own tokenizer with --tokenizer_name, or train one for your data with "
        "scripts/examples/train_tokenizers.py and a model of that vocabulary."
    )
    if ids > embeddings:
        raise ValueError(f"The tokenizer does not match the model: {sizes}. {fix}")
    if embeddings - ids > VOCABULARY_PADDING:
        logger.warning(f"The tokenizer may not match the model: {sizes}. {fix}")


def update_model_card(output_dir: str, metadata: dict, default_model_name: bool = False) -> None:
    """Set the non-empty `metadata` fields (pipeline_tag, widget, ...) on the model card Trainer wrote in
    `output_dir` (README.md), if there is one; with `default_model_name`, name a card that has no model name after
    the folder. The example scripts' `CardTrainer.create_model_card` calls it after Trainer's own."""
    path = os.path.join(output_dir, "README.md")
    if not os.path.isfile(path):
        return
    card = ModelCard.load(path)
    for key, value in metadata.items():
        if value:
            setattr(card.data, key, value)
    if default_model_name:
        card.data.model_name = card.data.model_name or os.path.basename(os.path.abspath(output_dir))
    card.save(path)
