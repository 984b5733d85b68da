"""What ea-hf's fine-tuning scripts (`run_glue.py`, `run_translation.py`, `run_image_classification.py`) share: they
take the arguments of transformers' example scripts of the same name, plus the EA switches of `ModelArguments`, and
run the same steps. A script's `main()` reads top to bottom as:

    model_args, data_args, training_args = parse_args((ModelArguments, DataArguments, TrainingArguments), argv)
    setup_logging(training_args, logger)               # per-process log level, the process summary, the arguments
    last_checkpoint = detect_last_checkpoint(training_args)   # resume, or refuse a used output_dir
    set_seed(training_args.seed)
    data = load_data_files({"train": ..., "validation": ...}, ...)  # or datasets.load_dataset(<Hub name>)
    ...                                                # check columns and labels: clear errors before any training
    processor = load_processor(model_args, AutoTokenizer)  # or AutoImageProcessor
    model = load_model(model_args, AutoModelForSequenceClassification, num_labels=...)
    model = treat_loss_as_mean(model)                  # classification heads: right under gradient accumulation
    trainer = Trainer(model=model, args=training_args, processing_class=processor, ...)
    if training_args.do_train:
        train_and_save(trainer, training_args, last_checkpoint, num_train_samples=len(train_dataset))
    if training_args.do_eval:
        record_metrics(trainer, "eval", trainer.evaluate())
    finish(trainer, model_args, training_args, tasks="text-classification", ...)  # model card, or push to the Hub

`--model_type ea` (the default) fine-tunes the EA twin of the checkpoint: an EA checkpoint loads as it is, a vanilla
one (e.g. `bert`) is converted on the fly (only the EA convolutions, and a new head, start untrained);
`--model_type vanilla` trains transformers' own model from the same vanilla checkpoint with the same script, for
comparisons. The scripts import this module as a sibling (`from finetuning import ...`), as transformers' examples
import their helpers; `select_samples` serves `--max_*_samples`, and `check_launch` (called by `setup_logging`)
refuses a multi-process launch that did not form one group.
"""

import logging
import os
import re
import sys
from dataclasses import dataclass, field

import datasets
import transformers
from transformers import AutoConfig, AutoTokenizer, HfArgumentParser, PreTrainedModel, Trainer, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ea_hf import AUTO_CLASSES, validate_evolving_attention_config


logger = logging.getLogger(__name__)

MODEL_TYPES = ("ea", "vanilla")
EA_SWITCHES = ("ea_alpha", "ea_beta", "ea_kernel_size", "ea_activation", "ea_conv")
CONFIG_FILE_SUFFIXES = (".json", ".yaml", ".yml")
DATA_FILE_BUILDERS = {"csv": "csv", "json": "json", "jsonl": "json"}  # file extension -> `datasets` builder
EA_CARD_TAGS = ["evolving-attention", "custom_code"]


@dataclass
class ModelArguments:
    """Which model, config and processor to fine-tune from (transformers' examples' `ModelArguments`), plus the model
    type and the EA switches (None: the checkpoint's value, or the EA config default for a vanilla checkpoint)."""

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


def parse_args(dataclass_types: tuple[type, ...], argv: list[str] | None = None) -> tuple:
    """One instance per dataclass type, from the command line (`argv`, default `sys.argv[1:]`) or, when the only
    argument is a `.json`/`.yaml` file, from that file. Unknown arguments are errors."""
    parser = HfArgumentParser(dataclass_types)
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(CONFIG_FILE_SUFFIXES):
        path = os.path.abspath(argv[0])
        return parser.parse_json_file(path) if path.endswith(".json") else parser.parse_yaml_file(path)
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)


def setup_logging(training_args: TrainingArguments, *loggers: logging.Logger) -> None:
    """Logging as in transformers' examples: INFO on the main process (or `--log_level`), WARNING on the others
    (`--log_level_replica`), for `loggers`, this module, transformers and datasets; then one summary line per
    process and the training arguments. Also refuses a multi-process launch whose processes did not join one group
    (see `check_launch`)."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if training_args.should_log:
        # the default `log_level` is "passive" (transformers' own level): INFO, as the examples do
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    for each in (logger, *loggers):
        each.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    logger.warning(
        f"Process rank: {training_args.process_index}, device: {training_args.device}, n_gpu: {training_args.n_gpu}, "
        f"distributed training: {training_args.parallel_mode.value == 'distributed'}, "
        f"16-bits training: {training_args.fp16 or training_args.bf16}"
    )
    logger.info(f"Training/evaluation parameters {training_args}")
    check_launch(training_args)


def check_launch(training_args: TrainingArguments) -> None:
    """Raise a `ValueError` when a launcher started several processes (`WORLD_SIZE` > 1) that did not form one
    distributed group: each would train the whole model alone and all would write the same `output_dir`. On a
    machine without GPUs, transformers sets the group up only with `--use_cpu true`:

        accelerate launch --multi_gpu --num_processes 2 scripts/run_glue.py ... --use_cpu true

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


def detect_last_checkpoint(training_args: TrainingArguments) -> str | None:
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
    """The EA switches given on the command line (the others stay None: the checkpoint's or the default value)."""
    return {name: getattr(model_args, name) for name in EA_SWITCHES if getattr(model_args, name) is not None}


def _hub_kwargs(model_args: ModelArguments) -> dict:
    return {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision, "token": model_args.token}


def ea_config_class(model_type: str) -> type | None:
    """The EA config class for an EA `model_type` (`ea_bert`) or the vanilla one it converts (`bert`); else None."""
    for config_class in AUTO_CLASSES:
        if model_type in (config_class.model_type, config_class.host_model_type):
            return config_class
    return None


def load_model(model_args: ModelArguments, auto_class: type, **config_kwargs) -> PreTrainedModel:
    """Load `model_args.model_name_or_path` for `auto_class` (e.g. `AutoModelForSequenceClassification`);
    `config_kwargs` (e.g. `num_labels=3`) go to the config.

    * `--model_type ea`: the EA class registered for `auto_class` in `ea_hf.AUTO_CLASSES` (for a BERT checkpoint and
      `AutoModelForSequenceClassification`: `EABertForSequenceClassification`). An EA checkpoint loads as it is; a
      vanilla checkpoint is converted on the fly. The EA switches given override the checkpoint's (or the default)
      values and are validated here, before any training.
    * `--model_type vanilla`: transformers' own class (`auto_class.from_pretrained`), with transformers' default
      attention implementation (logged); the EA switches are ignored with a warning. An EA checkpoint is refused.

    `--config_name` replaces the checkpoint's config. Logs the class built and the weights that are new (not in the
    checkpoint), unused or resized. Raises a `ValueError` for a model type with no EA twin or no EA model for
    `auto_class`, and for an EA switch the model does not have (`--ea_conv` is ViT's only).
    """
    hub = _hub_kwargs(model_args)
    source = model_args.model_name_or_path
    config_source = model_args.config_name or source
    checkpoint_type = AutoConfig.from_pretrained(
        config_source, trust_remote_code=model_args.trust_remote_code, **hub
    ).model_type
    overrides = ea_overrides(model_args)
    ea_types = {config_class.model_type for config_class in AUTO_CLASSES}
    if model_args.model_type == "vanilla":
        if checkpoint_type in ea_types:
            raise ValueError(
                f"{config_source} is an EA checkpoint (model_type `{checkpoint_type}`); --model_type vanilla trains "
                "transformers' own model and needs a vanilla checkpoint (e.g. the one this was converted from). Use "
                "--model_type ea to fine-tune it."
            )
        if overrides:
            logger.warning(f"--model_type vanilla: ignoring the EA switches {overrides}.")
        config = AutoConfig.from_pretrained(
            config_source, trust_remote_code=model_args.trust_remote_code, **hub, **config_kwargs
        )
        model_class = auto_class
        kind = "vanilla"
    else:
        config_class = ea_config_class(checkpoint_type)
        if config_class is None:
            supported = sorted(c.host_model_type for c in AUTO_CLASSES if c.host_model_type)
            raise ValueError(
                f"{config_source} holds a `{checkpoint_type}` model, which has no EA twin (EA converts: "
                f"{', '.join(supported)}). Use --model_type vanilla to fine-tune it as it is."
            )
        model_class = AUTO_CLASSES[config_class].get(auto_class)
        if model_class is None:
            heads = ", ".join(auto.__name__ for auto in AUTO_CLASSES[config_class])
            raise ValueError(f"{config_class.model_type} has no model for {auto_class.__name__}; it has: {heads}.")
        unknown = sorted(set(overrides) - set(config_class.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"{', '.join('--' + name for name in unknown)} does not apply to {config_class.model_type} models."
            )
        config = config_class.from_pretrained(config_source, **hub, **config_kwargs, **overrides)
        validate_evolving_attention_config(config)  # overrides are set after the config's own checks
        kind = f"EA, converted from `{checkpoint_type}`" if checkpoint_type != config_class.model_type else "EA"
    model, loading_info = model_class.from_pretrained(
        source,
        config=config,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        output_loading_info=True,
        **({"trust_remote_code": model_args.trust_remote_code} if kind == "vanilla" else {}),
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


def treat_loss_as_mean(model: PreTrainedModel) -> PreTrainedModel:
    """Make Trainer scale the loss right under gradient accumulation for a head whose loss is a mean over the batch
    (sequence or image classification): transformers' classes declare no `accepts_loss_kwargs`, so Trainer takes
    their loss for a sum over `num_items_in_batch` and multiplies the gradients by the accumulation steps. EA heads
    set the flag themselves; applying it to a vanilla model keeps EA-vs-vanilla comparisons fair."""
    model.accepts_loss_kwargs = False
    return model


def load_processor(
    model_args: ModelArguments, processor_class: type = AutoTokenizer, name: str | None = None, **kwargs
):
    """The tokenizer (or image processor, with `processor_class=AutoImageProcessor`) from `name`, else
    `--tokenizer_name`, else the checkpoint."""
    source = name or model_args.tokenizer_name or model_args.model_name_or_path
    return processor_class.from_pretrained(
        source, trust_remote_code=model_args.trust_remote_code, **_hub_kwargs(model_args), **kwargs
    )


def load_data_files(data_files: dict[str, str | None], cache_dir: str | None = None) -> datasets.DatasetDict:
    """Local data files (split name -> path; None entries are skipped) as a `DatasetDict`. All files must be of the
    same kind, CSV (`.csv`) or JSON (`.json`, or JSON lines `.jsonl`), and exist: a clear `ValueError` or
    `FileNotFoundError` otherwise. Each file is read on its own, so their columns may differ (checking them is the
    script's job)."""
    data_files = {split: path for split, path in data_files.items() if path is not None}
    if not data_files:
        raise ValueError("No data file given.")
    builders = {}
    for split, path in data_files.items():
        extension = path.rsplit(".", 1)[-1].lower() if "." in os.path.basename(path) else ""
        if extension not in DATA_FILE_BUILDERS:
            raise ValueError(f"The {split} file {path} should be a csv or a json file (.csv, .json, .jsonl).")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"The {split} file {path} does not exist.")
        builders[split] = DATA_FILE_BUILDERS[extension]
    if len(set(builders.values())) > 1:
        raise ValueError(
            "The data files should all be csv or all be json: "
            + ", ".join(f"{split} {path}" for split, path in data_files.items())
            + "."
        )
    loaded = datasets.DatasetDict()
    for split, path in data_files.items():  # one at a time: a test file may lack the label column
        logger.info(f"Loading a local file for {split}: {path}")
        loaded[split] = datasets.load_dataset(
            builders[split], data_files={split: path}, split=split, cache_dir=cache_dir
        )
    return loaded


def select_samples(dataset: datasets.Dataset, max_samples: int | None) -> datasets.Dataset:
    """The first `max_samples` rows (all when None), as `--max_train_samples` and friends do."""
    return dataset if max_samples is None else dataset.select(range(min(max_samples, len(dataset))))


def record_metrics(trainer: Trainer, split: str, metrics: dict[str, float]) -> None:
    """Log `metrics` and write them to `<output_dir>/<split>_results.json`, merged into `all_results.json` (on the
    main process only)."""
    trainer.log_metrics(split, metrics)
    trainer.save_metrics(split, metrics)


def predict_in_order(trainer: Trainer, dataset, **kwargs):
    """`trainer.predict(dataset, **kwargs)` with the predictions in the dataset's order. transformers 5 batches
    evaluation and prediction by length too under `--train_sampling_strategy group_by_length`, which would write a
    prediction file in another order than its test file."""
    strategy = trainer.args.train_sampling_strategy
    trainer.args.train_sampling_strategy = "sequential"
    try:
        return trainer.predict(dataset, **kwargs)
    finally:
        trainer.args.train_sampling_strategy = strategy


def train_and_save(
    trainer: Trainer,
    training_args: TrainingArguments,
    last_checkpoint: str | None = None,
    num_train_samples: int | None = None,
) -> dict[str, float]:
    """Train, resuming from `--resume_from_checkpoint` or else `last_checkpoint` (see `detect_last_checkpoint`);
    then save the model and the processing class to `output_dir` (an EA model with its code files and `auto_map`,
    so that the folder loads with `trust_remote_code=True` where ea_hf is not installed), `train_results.json`,
    `all_results.json` and `trainer_state.json`. Returns the training metrics."""
    checkpoint = training_args.resume_from_checkpoint or last_checkpoint
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = dict(train_result.metrics)
    if num_train_samples is not None:
        metrics["train_samples"] = num_train_samples
    trainer.save_model()
    record_metrics(trainer, "train", metrics)
    trainer.save_state()
    return metrics


def finish(trainer: Trainer, model_args: ModelArguments, training_args: TrainingArguments, **card_kwargs) -> None:
    """Write the model card (`README.md`) to `output_dir`, or with `--push_to_hub` push the model, processing class
    and card to `--hub_model_id`. `card_kwargs` go to `Trainer.create_model_card` (`tasks`, `dataset`,
    `dataset_tags`, `dataset_args`, `language`, `tags`); EA models get the `evolving-attention` and `custom_code`
    tags."""
    card_kwargs.setdefault("finetuned_from", model_args.model_name_or_path)
    if trainer.model.config.model_type in {config_class.model_type for config_class in AUTO_CLASSES}:
        tags = card_kwargs.get("tags") or []
        card_kwargs["tags"] = [*([tags] if isinstance(tags, str) else tags), *EA_CARD_TAGS]
    if training_args.push_to_hub:
        trainer.push_to_hub(**card_kwargs)
    elif training_args.should_save:
        trainer.create_model_card(**card_kwargs)
