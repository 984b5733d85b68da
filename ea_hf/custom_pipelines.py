"""Registering ea_hf's custom pipelines with transformers, and saving them with a model as remote code.

A custom pipeline lives in a self-contained module (`pipeline_translation.py`, `pipeline_time_series.py`) that is
copied into saved folders: transformers loads it with `pipeline(task, model=folder, trust_remote_code=True)` where
ea_hf is not installed. This module is not copied: it registers those pipelines (`import ea_hf` runs
`register_translation_pipeline()` and `register_time_series_pipeline()`) and writes the folders.

- `register_pipeline(task, pipeline_class, auto_model_class, type)`: `pipeline(task, model=...)` builds
  `pipeline_class` in this process; the class's `save_pretrained` then calls `save_pipeline`.
- `save_pipeline(pipeline_class, model, processor, folder)`: model, processor (tokenizer, or None), the pipeline's
  code file and the `custom_pipelines` entry of config.json.
"""

import inspect
import json
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import pipelines
from transformers.dynamic_module_utils import get_imports, get_relative_imports
from transformers.utils import logging

from . import pipeline_time_series, pipeline_translation
from .pipeline_time_series import TimeSeriesClassificationPipeline
from .pipeline_translation import TranslationPipeline


logger = logging.get_logger(__name__)


def register_pipeline(task: str, pipeline_class: type, auto_model_class: type, type: str | None = None) -> None:
    """Make `transformers.pipeline(task, model=...)` build `pipeline_class`, with models loaded by
    `auto_model_class` (e.g. `AutoModelForSequenceClassification`); `type` is transformers' input kind ("text",
    "image", ...). A task transformers lists as removed (e.g. "translation" in 5.24) is taken out of that list, since
    `pipeline()` raises KeyError for it before looking at registered ones. Registering the same class again does
    nothing.

    Also points `pipeline_class.save_pretrained` at `save_pipeline` (the class must have a `_save_pipeline` slot).
    """
    registered = pipelines.PIPELINE_REGISTRY.supported_tasks.get(task, {})
    if registered.get("impl") is not pipeline_class or registered.get("pt") != (auto_model_class,):
        pipelines.PIPELINE_REGISTRY.register_pipeline(
            task, pipeline_class=pipeline_class, pt_model=auto_model_class, default=None, type=type
        )
    removed_tasks = getattr(pipelines, "REMOVED_TASKS", None)
    if isinstance(removed_tasks, dict):
        removed_tasks.pop(task, None)
    pipeline_class._save_pipeline = staticmethod(save_pipeline)


def custom_pipelines_entry(pipeline_class: type) -> dict:
    """The `custom_pipelines` entry of config.json for a registered `pipeline_class`:
    `{task: {"impl": "<module file stem>.<class>", "pt": [auto model class names], "type": ...}}`."""
    entries = {
        task: info
        for task, info in pipelines.PIPELINE_REGISTRY.supported_tasks.items()
        if info.get("impl") is pipeline_class
    }
    if not entries:
        raise ValueError(f"{pipeline_class.__name__} is not registered for any task: call `register_pipeline` first.")
    module_stem = pipeline_class.__module__.split(".")[-1]
    result = {}
    for task, info in entries.items():
        entry = {"impl": f"{module_stem}.{pipeline_class.__name__}", "pt": [c.__name__ for c in info.get("pt", ())]}
        if info.get("type") is not None:
            entry["type"] = info["type"]
        result[task] = entry
    return result


def _pipeline_code_file(pipeline_class: type) -> Path:
    """The file defining `pipeline_class`, checked to load as remote code on its own."""
    code_file = Path(inspect.getfile(pipeline_class))
    relative = get_relative_imports(code_file)
    if relative:
        raise ValueError(
            f"{code_file} has relative imports ({relative}): a pipeline's remote code must be a single file."
        )
    package = pipeline_class.__module__.split(".")[0]
    if package != pipeline_class.__module__ and package in get_imports(code_file):
        raise ValueError(f"{code_file} imports {package}, which is not installed where its remote code runs.")
    return code_file


def save_pipeline(pipeline_class: type, model, processor, folder: str | os.PathLike, **kwargs: Any) -> Path:
    """Write a folder that `pipeline(task, model=folder, trust_remote_code=True)` loads anywhere, for each task
    `pipeline_class` is registered for: the model (its own remote code too, if it has some), `processor` (tokenizer,
    feature extractor, ...; None for a pipeline that needs none), the pipeline's code file, and `custom_pipelines` in
    config.json. `kwargs` go to the `save_pretrained` calls. Returns the folder.

    The model's config gets `custom_pipelines` only for the save: it is restored afterwards, so that a later plain
    `model.save_pretrained` doesn't write an entry whose code file is missing.
    """
    entry = custom_pipelines_entry(pipeline_class)
    if processor is None and getattr(pipeline_class, "_load_tokenizer", False):
        raise ValueError(f"{pipeline_class.__name__} needs a tokenizer: pass it as `processor`.")
    code_file = _pipeline_code_file(pipeline_class)
    folder = Path(folder)
    if folder.is_file():
        raise ValueError(f"{folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)

    config = model.config
    had_entry = "custom_pipelines" in config.__dict__
    previous = config.__dict__.get("custom_pipelines")
    config.custom_pipelines = {**(previous or {}), **entry}
    try:
        model.save_pretrained(folder, **kwargs)
    finally:
        if had_entry:
            config.custom_pipelines = previous
        else:
            del config.custom_pipelines
    if processor is not None:
        processor.save_pretrained(folder, **kwargs)
    destination = folder / code_file.name
    if code_file.resolve() != destination.resolve():
        shutil.copyfile(code_file, destination)

    with open(folder / "config.json", encoding="utf-8") as f:  # read back as JSON: no class lookup, no remote code
        saved = json.load(f)
    for task, expected in entry.items():
        written = saved.get("custom_pipelines", {}).get(task)
        if written != expected or not destination.is_file():
            raise RuntimeError(f"Saving the {task} pipeline to {folder} failed: config.json has {written!r}")
    model_class = type(model)
    auto_names = {name for info in entry.values() for name in info["pt"]}
    if not model_class.__module__.startswith("transformers.") and not auto_names & set(saved.get("auto_map") or {}):
        auto_name = sorted(auto_names)[0] if auto_names else "AutoModel"
        logger.warning(
            f"{model_class.__name__} is not a transformers model and config.json has no auto_map entry for"
            f" {auto_name}: {folder} loads only where the package that registers it is imported"
            f" (call `{model_class.__name__}.register_for_auto_class('{auto_name}')` before saving to ship its code"
            " too)."
        )
    return folder


def register_translation_pipeline() -> None:
    """Make `transformers.pipeline("translation", model=..., tokenizer=...)` build a `TranslationPipeline`
    (`AutoModelForSeq2SeqLM` models). transformers 5.24 lists "translation" among its removed tasks: the task is
    taken out of that list. Calling it again does nothing."""
    register_pipeline(
        pipeline_translation.TASK,
        TranslationPipeline,
        pipeline_translation.AUTO_MODEL_CLASS,
        pipeline_translation.PIPELINE_TYPE,
    )


def save_translation_pipeline(model, tokenizer, folder: str | os.PathLike, **kwargs: Any) -> Path:
    """Write a folder that `pipeline("translation", model=folder, trust_remote_code=True)` loads anywhere: the model,
    the tokenizer, `pipeline_translation.py` and `custom_pipelines` in config.json (see `save_pipeline`)."""
    if tokenizer is None:
        raise ValueError("save_translation_pipeline needs a tokenizer: the pipeline cannot run without one.")
    register_translation_pipeline()
    return save_pipeline(TranslationPipeline, model, tokenizer, folder, **kwargs)


def register_time_series_pipeline() -> None:
    """Make `transformers.pipeline("time-series-classification", model=...)` build a
    `TimeSeriesClassificationPipeline` (models loaded with `AutoModelForSequenceClassification`, with which
    EA-DC-Transformer classification is registered). Calling it again does nothing."""
    register_pipeline(
        pipeline_time_series.TASK,
        TimeSeriesClassificationPipeline,
        pipeline_time_series.AUTO_MODEL_CLASS,
        pipeline_time_series.PIPELINE_TYPE,
    )


def save_time_series_pipeline(model, folder: str | os.PathLike, **kwargs: Any) -> Path:
    """Write a folder that `pipeline("time-series-classification", model=folder, trust_remote_code=True)` loads
    anywhere: the model (with its config's `standardizer`, `id2label`), `pipeline_time_series.py` and
    `custom_pipelines` in config.json (see `save_pipeline`)."""
    register_time_series_pipeline()
    return save_pipeline(TimeSeriesClassificationPipeline, model, None, folder, **kwargs)


__all__ = [
    "custom_pipelines_entry",
    "register_pipeline",
    "register_time_series_pipeline",
    "register_translation_pipeline",
    "save_pipeline",
    "save_time_series_pipeline",
    "save_translation_pipeline",
]
