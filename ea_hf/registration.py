"""The table of EA configs and models per Auto class, the lookup `ea_model_classes`, and their registration (run on
`import ea_hf`)."""

from typing import NamedTuple

import transformers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForMaskedImageModeling,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTextEncoding,
    AutoModelForTokenClassification,
)

from .configuration_ea_bert import EABertConfig
from .configuration_ea_dc_transformer import EADCTransformerConfig
from .configuration_ea_llama import EALlamaConfig
from .configuration_ea_marian import EAMarianConfig
from .configuration_ea_qwen2 import EAQwen2Config
from .configuration_ea_t5 import EAT5Config
from .configuration_ea_vit import EAViTConfig
from .modeling_ea_bert import (
    EABertForMaskedLM,
    EABertForMultipleChoice,
    EABertForQuestionAnswering,
    EABertForSequenceClassification,
    EABertForTokenClassification,
    EABertModel,
)
from .modeling_ea_dc_transformer import EADCTransformerForTimeSeriesClassification, EADCTransformerModel
from .modeling_ea_llama import EALlamaForCausalLM, EALlamaForSequenceClassification, EALlamaModel
from .modeling_ea_marian import EAMarianModel, EAMarianMTModel
from .modeling_ea_qwen2 import EAQwen2ForCausalLM, EAQwen2ForSequenceClassification, EAQwen2Model
from .modeling_ea_t5 import EAT5EncoderModel, EAT5ForConditionalGeneration, EAT5Model
from .modeling_ea_vit import EAViTForImageClassification, EAViTForMaskedImageModeling, EAViTModel


AUTO_CLASSES = {
    EABertConfig: {
        AutoModel: EABertModel,
        AutoModelForMaskedLM: EABertForMaskedLM,
        AutoModelForSequenceClassification: EABertForSequenceClassification,
        AutoModelForTokenClassification: EABertForTokenClassification,
        AutoModelForQuestionAnswering: EABertForQuestionAnswering,
        AutoModelForMultipleChoice: EABertForMultipleChoice,
    },
    EAT5Config: {
        AutoModel: EAT5Model,
        AutoModelForSeq2SeqLM: EAT5ForConditionalGeneration,
        AutoModelForTextEncoding: EAT5EncoderModel,
    },
    EAMarianConfig: {
        AutoModel: EAMarianModel,
        AutoModelForSeq2SeqLM: EAMarianMTModel,
    },
    EALlamaConfig: {
        AutoModel: EALlamaModel,
        AutoModelForCausalLM: EALlamaForCausalLM,
        AutoModelForSequenceClassification: EALlamaForSequenceClassification,
    },
    EAQwen2Config: {
        AutoModel: EAQwen2Model,
        AutoModelForCausalLM: EAQwen2ForCausalLM,
        AutoModelForSequenceClassification: EAQwen2ForSequenceClassification,
    },
    EAViTConfig: {
        AutoModel: EAViTModel,
        AutoModelForImageClassification: EAViTForImageClassification,
        AutoModelForMaskedImageModeling: EAViTForMaskedImageModeling,
    },
    # transformers has no Auto class for time-series classification: sequence classification is the one that fits
    EADCTransformerConfig: {
        AutoModel: EADCTransformerModel,
        AutoModelForSequenceClassification: EADCTransformerForTimeSeriesClassification,
    },
}


class EAModelClasses(NamedTuple):
    """An EA model class and its vanilla twin: transformers' class of the same head (None where the EA model has no
    vanilla model type, as the EA-DC-Transformer)."""

    ea: type
    vanilla: type | None


def ea_model_classes(config: transformers.PreTrainedConfig, auto_class: type | None = None) -> EAModelClasses:
    """The EA class and its vanilla twin for `config` (an EA config, or the vanilla config it converts) and
    `auto_class` (e.g. `AutoModelForSequenceClassification`: `EABertForSequenceClassification` and
    `BertForSequenceClassification` for a BERT config). Without `auto_class`: the first of `config.architectures`
    with an EA twin (`BertForMaskedLM` -> `EABertForMaskedLM`), else the base model.

    Raises a `ValueError` for a model type with no EA twin, and for an `auto_class` the EA family has no model for.
    """
    for config_class, models in AUTO_CLASSES.items():
        if config.model_type in (config_class.model_type, config_class.host_model_type):
            break
    else:
        supported = sorted(c.host_model_type for c in AUTO_CLASSES if c.host_model_type)
        raise ValueError(
            f"No EA model for model_type `{config.model_type}`; EA converts: {', '.join(supported)} (and loads "
            f"{', '.join(c.model_type for c in AUTO_CLASSES)})."
        )
    if auto_class is None:
        by_name = {model_class.__name__: model_class for model_class in models.values()}
        named = [name if name.startswith("EA") else f"EA{name}" for name in config.architectures or []]
        ea_class = next((by_name[name] for name in named if name in by_name), models[AutoModel])
    elif auto_class in models:
        ea_class = models[auto_class]
    else:
        heads = ", ".join(auto.__name__ for auto in models)
        raise ValueError(f"{config_class.model_type} has no model for {auto_class.__name__}; it has: {heads}.")
    if config_class.host_model_type is None:
        return EAModelClasses(ea_class, None)
    return EAModelClasses(ea_class, getattr(transformers, ea_class.__name__.removeprefix("EA")))


def register_auto_classes() -> None:
    """Register each EA config and model with the Auto classes, and as remote code for `save_pretrained`."""
    for config_class, models in AUTO_CLASSES.items():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        config_class.register_for_auto_class()
        for auto_class, model_class in models.items():
            auto_class.register(config_class, model_class, exist_ok=True)
            model_class.register_for_auto_class(auto_class.__name__)
