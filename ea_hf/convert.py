"""Convert a vanilla checkpoint (local folder or Hub id) into an EA checkpoint folder."""

import fnmatch
import json
import os
import shutil

from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer
from transformers.utils import logging

from .model_source import check_model_source
from .registration import ea_model_classes


logger = logging.get_logger(__name__)


# The sentence-transformers files beside a root Transformer module: `sentence_bert_config.json` (or the
# `sentence_<model>_config.json` of older saves) configures that module.
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "config_sentence_transformers.json", "sentence_*_config.json")


def sentence_transformers_folder(source: str) -> tuple[str, list[dict]] | None:
    """`(folder, modules)` when `source` is a sentence-transformers checkpoint (it has a `modules.json`): a local
    folder as it is, a Hub id downloaded (only its sentence-transformers files; local folders need no network).
    None for a plain transformers checkpoint. Raises ValueError when the Transformer module is not at the root: only
    the root weights are converted, so that module would stay vanilla."""
    if os.path.isdir(source):
        modules_file = os.path.join(source, "modules.json")
        if not os.path.isfile(modules_file):
            return None
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            modules_file = hf_hub_download(source, "modules.json")
        except (OSError, EntryNotFoundError):  # no modules.json in the repository, or offline
            return None
    with open(modules_file) as f:
        modules = json.load(f)
    for module in modules:
        if module["path"] and module["type"].rsplit(".", 1)[-1] == "Transformer":
            raise ValueError(f"{source}: the Transformer module is in `{module['path']}/`; convert that folder.")
    if os.path.isdir(source):
        return source, modules
    from huggingface_hub import snapshot_download

    subfolders = [f"{module['path']}/*" for module in modules if module["path"]]
    folder = snapshot_download(source, allow_patterns=[*SENTENCE_TRANSFORMERS_FILES, *subfolders])
    return folder, modules


def copy_sentence_transformers_files(folder: str, modules: list[dict], output_dir: str) -> None:
    """Copy a sentence-transformers checkpoint's `modules.json`, its configs and its module subfolders (Pooling,
    Dense with its weights, Normalize, ...) from `folder` into `output_dir`, beside the converted EA model, so that
    `SentenceTransformer(output_dir, trust_remote_code=True)` rebuilds the same pipeline around the EA model. Files
    already in `output_dir` (written by the conversion) are kept; the model card (README.md) is not copied: it
    describes the vanilla model."""
    for name in os.listdir(folder):
        target = os.path.join(output_dir, name)
        if not os.path.exists(target) and any(fnmatch.fnmatch(name, p) for p in SENTENCE_TRANSFORMERS_FILES):
            shutil.copy2(os.path.join(folder, name), target)
    for module in modules:
        source, target = os.path.join(folder, module["path"]), os.path.join(output_dir, module["path"])
        if module["path"] and os.path.isdir(source) and not os.path.exists(target):  # Normalize may have no folder
            shutil.copytree(source, target)


def convert_checkpoint(source: str, output_dir: str, **ea_config: float | int | str | bool) -> str:
    """Load a vanilla checkpoint into its EA twin, with EA config overrides (`ea_alpha=...`), and save it with its
    tokenizer (or image processor), remote code and an `auto_map` for every head. A sentence-transformers checkpoint
    (with a `modules.json`) keeps its modules and configs: `SentenceTransformer(output_dir, trust_remote_code=True)`
    loads it with the EA model as its Transformer module. Returns `output_dir`. A `source` that names a local path
    must exist (`ea_hf.check_model_source`)."""
    source = check_model_source(source, what="source")
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        raise FileExistsError(f"{output_dir} exists and is not empty; choose a new folder.")
    model_class = ea_model_classes(AutoConfig.from_pretrained(source)).ea
    sentence_transformers = sentence_transformers_folder(source)
    model = model_class.from_pretrained(source, **ea_config)
    model.save_pretrained(output_dir)
    images = model_class.main_input_name == "pixel_values"
    processor_class = AutoImageProcessor if images else AutoTokenizer
    try:
        processor_class.from_pretrained(source).save_pretrained(output_dir)
    except (OSError, ValueError, TypeError) as error:  # MarianTokenizer without its .spm files: TypeError
        logger.warning(
            f"No {'image processor' if images else 'tokenizer'} saved: {source} has none that loads ({error})."
        )
    if sentence_transformers:
        copy_sentence_transformers_files(*sentence_transformers, output_dir)
    logger.info(f"Saved {model_class.__name__} to {output_dir}")
    return output_dir
