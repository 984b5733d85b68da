"""The table of EA configs and models per Auto class, and their registration (run on `import ea_hf`)."""

from transformers import (
    AutoConfig,
    AutoModel,
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
from .configuration_ea_marian import EAMarianConfig
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
from .modeling_ea_marian import EAMarianModel, EAMarianMTModel
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


def register_auto_classes() -> None:
    """Register each EA config and model with the Auto classes, and as remote code for `save_pretrained`."""
    for config_class, models in AUTO_CLASSES.items():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        config_class.register_for_auto_class()
        for auto_class, model_class in models.items():
            auto_class.register(config_class, model_class, exist_ok=True)
            model_class.register_for_auto_class(auto_class.__name__)
