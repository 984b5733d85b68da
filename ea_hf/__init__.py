"""ea-hf: evolving attention (Wang et al., TPAMI 2023) for Hugging Face Transformers.

Importing `ea_hf` registers every EA config and model with transformers' Auto classes, and the `translation` and
`time-series-classification` pipelines with `transformers.pipeline`.
"""

from .configuration_ea_bert import EABertConfig
from .configuration_ea_dc_transformer import EADCTransformerConfig
from .configuration_ea_llama import EALlamaConfig
from .configuration_ea_marian import EAMarianConfig
from .configuration_ea_qwen2 import EAQwen2Config
from .configuration_ea_t5 import EAT5Config
from .configuration_ea_vit import EAViTConfig
from .convert import convert_checkpoint
from .custom_pipelines import (
    register_pipeline,
    register_time_series_pipeline,
    register_translation_pipeline,
    save_pipeline,
    save_time_series_pipeline,
    save_translation_pipeline,
)
from .evolving_attention import (
    EvolvingAttentionCache,
    EvolvingAttentionDynamicCache,
    EvolvingAttentionStep,
    attention_probabilities,
)
from .model_source import check_model_source
from .modeling_ea_bert import (
    EABertForMaskedLM,
    EABertForMultipleChoice,
    EABertForQuestionAnswering,
    EABertForSequenceClassification,
    EABertForTokenClassification,
    EABertModel,
    EABertPreTrainedModel,
)
from .modeling_ea_dc_transformer import (
    EADCTransformerForTimeSeriesClassification,
    EADCTransformerForTimeSeriesRegression,
    EADCTransformerModel,
    EADCTransformerPreTrainedModel,
)
from .modeling_ea_llama import (
    EALlamaForCausalLM,
    EALlamaForSequenceClassification,
    EALlamaModel,
    EALlamaPreTrainedModel,
)
from .modeling_ea_marian import EAMarianModel, EAMarianMTModel, EAMarianPreTrainedModel
from .modeling_ea_qwen2 import (
    EAQwen2ForCausalLM,
    EAQwen2ForSequenceClassification,
    EAQwen2Model,
    EAQwen2PreTrainedModel,
)
from .modeling_ea_t5 import EAT5EncoderModel, EAT5ForConditionalGeneration, EAT5Model, EAT5PreTrainedModel
from .modeling_ea_vit import EAViTForImageClassification, EAViTForMaskedImageModeling, EAViTModel, EAViTPreTrainedModel
from .pipeline_time_series import TimeSeriesClassificationPipeline
from .pipeline_translation import TranslationPipeline
from .registration import AUTO_CLASSES, EAModelClasses, ea_model_classes, register_auto_classes


__version__ = "0.1.0"

register_auto_classes()
register_translation_pipeline()
register_time_series_pipeline()

__all__ = [
    "AUTO_CLASSES",
    "EABertConfig",
    "EABertForMaskedLM",
    "EABertForMultipleChoice",
    "EABertForQuestionAnswering",
    "EABertForSequenceClassification",
    "EABertForTokenClassification",
    "EABertModel",
    "EABertPreTrainedModel",
    "EADCTransformerConfig",
    "EADCTransformerForTimeSeriesClassification",
    "EADCTransformerForTimeSeriesRegression",
    "EADCTransformerModel",
    "EADCTransformerPreTrainedModel",
    "EALlamaConfig",
    "EALlamaForCausalLM",
    "EALlamaForSequenceClassification",
    "EALlamaModel",
    "EALlamaPreTrainedModel",
    "EAMarianConfig",
    "EAMarianModel",
    "EAMarianMTModel",
    "EAMarianPreTrainedModel",
    "EAQwen2Config",
    "EAQwen2ForCausalLM",
    "EAQwen2ForSequenceClassification",
    "EAQwen2Model",
    "EAQwen2PreTrainedModel",
    "EAT5Config",
    "EAT5EncoderModel",
    "EAT5ForConditionalGeneration",
    "EAT5Model",
    "EAT5PreTrainedModel",
    "EAViTConfig",
    "EAViTForImageClassification",
    "EAViTForMaskedImageModeling",
    "EAViTModel",
    "EAViTPreTrainedModel",
    "EAModelClasses",
    "EvolvingAttentionCache",
    "EvolvingAttentionDynamicCache",
    "EvolvingAttentionStep",
    "TimeSeriesClassificationPipeline",
    "TranslationPipeline",
    "attention_probabilities",
    "check_model_source",
    "convert_checkpoint",
    "ea_model_classes",
    "register_pipeline",
    "register_time_series_pipeline",
    "register_translation_pipeline",
    "save_pipeline",
    "save_time_series_pipeline",
    "save_translation_pipeline",
]
