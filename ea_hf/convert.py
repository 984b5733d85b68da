"""Convert a vanilla checkpoint (local folder or Hub id) into an EA checkpoint folder."""

import os

from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer
from transformers.utils import logging

from .registration import AUTO_CLASSES


logger = logging.get_logger(__name__)


def ea_model_class(host_config) -> type:
    """The EA class for a vanilla config: `BertForMaskedLM` -> `EABertForMaskedLM`; the EA base model when the
    config names no architecture with an EA twin."""
    for config_class, models in AUTO_CLASSES.items():
        if host_config.model_type in (config_class.host_model_type, config_class.model_type):
            by_name = {model_class.__name__: model_class for model_class in models.values()}
            for architecture in host_config.architectures or []:
                name = architecture if architecture.startswith("EA") else f"EA{architecture}"
                if name in by_name:
                    return by_name[name]
            return models[next(iter(models))]
    supported = sorted(c.host_model_type for c in AUTO_CLASSES if c.host_model_type)
    raise ValueError(f"No EA model for model_type `{host_config.model_type}`; supported: {supported}.")


def convert_checkpoint(source: str, output_dir: str, **ea_config: float | int | str | bool) -> str:
    """Load a vanilla checkpoint into its EA twin, with EA config overrides (`ea_alpha=...`), and save it with its
    tokenizer (or image processor), remote code and an `auto_map` for every head. Returns `output_dir`."""
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        raise FileExistsError(f"{output_dir} exists and is not empty; choose a new folder.")
    model_class = ea_model_class(AutoConfig.from_pretrained(source))
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
    logger.info(f"Saved {model_class.__name__} to {output_dir}")
    return output_dir
