"""EA-BERT: transformers' BERT with evolving attention through the encoder's self-attention layers.

Only the self-attention, the layer and the encoder differ from transformers' BERT (they compute the logits, evolve
them, and hand them to the next layer); embeddings, feed-forward, pooler, the prediction heads and most heads' forward
passes are transformers' own. Module and parameter names are BERT's, so vanilla BERT checkpoints load with only the EA
convolutions (`...attention.self.evolving_attention.conv.*`) new.
"""

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPoolingAndCrossAttentions,
    MaskedLMOutput,
    TokenClassifierOutput,
)
from transformers.models.bert.modeling_bert import (
    BertEmbeddings,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertIntermediate,
    BertOnlyMLMHead,
    BertOutput,
    BertPooler,
    BertPreTrainedModel,
    BertSelfOutput,
)
from transformers.pytorch_utils import apply_chunking_to_forward
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_ea_bert import EABertConfig
from .evolving_attention import (
    EAPreTrainedMixin,
    EvolvingAttentionStep,
    check_token_ids,
    evolving_attention_forward,
    padding_mask_from,
)


class EABertSelfAttention(nn.Module):
    """BERT self-attention whose logits evolve: same `query`/`key`/`value` as `BertSelfAttention`."""

    def __init__(self, config: EABertConfig, layer_idx: int):
        super().__init__()
        if config.hidden_size % config.num_attention_heads != 0:
            raise ValueError(
                f"The hidden size ({config.hidden_size}) is not a multiple of the number of attention "
                f"heads ({config.num_attention_heads})"
            )
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.scaling = self.attention_head_size**-0.5
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_rate = config.attention_probs_dropout_prob
        # the chain's first layer has no predecessor: E_0 = S_0, no EA step
        self.evolving_attention = (
            EvolvingAttentionStep(config, config.num_attention_heads) if config.ea_encoder and layer_idx > 0 else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        previous_logits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            hidden_states: [B, L, D].
            padding_mask: [B, L] bool, True at real tokens; None when nothing is padded.
            previous_logits: [B, H, L, L], the previous layer's evolved logits, or None.
        Returns:
            output [B, L, D], attention probabilities [B, H, L, L] (after EA), evolved logits [B, H, L, L].
        """
        hidden_shape = (*hidden_states.shape[:-1], -1, self.attention_head_size)
        query = self.query(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.key(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.value(hidden_states).view(hidden_shape).transpose(1, 2)

        output, probabilities, logits, _ = evolving_attention_forward(
            query,
            key,
            value,
            self.evolving_attention,
            previous_logits,
            scaling=self.scaling,
            query_mask=padding_mask,
            key_mask=padding_mask,
            dropout=self.dropout_rate if self.training else 0.0,
        )
        return output.reshape(*hidden_states.shape[:-1], -1), probabilities, logits


class EABertAttention(nn.Module):
    def __init__(self, config: EABertConfig, layer_idx: int):
        super().__init__()
        self.self = EABertSelfAttention(config, layer_idx)
        self.output = BertSelfOutput(config)

    def forward(self, hidden_states, padding_mask=None, previous_logits=None):
        output, probabilities, logits = self.self(hidden_states, padding_mask, previous_logits)
        return self.output(output, hidden_states), probabilities, logits


class EABertLayer(GradientCheckpointingLayer):
    """A BERT layer that takes the previous layer's evolved logits and returns its own (as T5 passes
    `position_bias`), so that gradient checkpointing recomputes each layer from its explicit inputs."""

    def __init__(self, config: EABertConfig, layer_idx: int):
        super().__init__()
        self.chunk_size_feed_forward = config.chunk_size_feed_forward
        self.seq_len_dim = 1
        self.attention = EABertAttention(config, layer_idx)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        previous_logits: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the layer output [B, L, D] and the evolved logits [B, H, L, L] for the next layer."""
        attention_output, _, logits = self.attention(hidden_states, padding_mask, previous_logits)
        layer_output = apply_chunking_to_forward(
            self.feed_forward_chunk, self.chunk_size_feed_forward, self.seq_len_dim, attention_output
        )
        return layer_output, logits

    def feed_forward_chunk(self, attention_output):
        return self.output(self.intermediate(attention_output), attention_output)


class EABertEncoder(nn.Module):
    def __init__(self, config: EABertConfig):
        super().__init__()
        self.layer = nn.ModuleList([EABertLayer(config, i) for i in range(config.num_hidden_layers)])

    def forward(self, hidden_states, padding_mask=None, **kwargs) -> BaseModelOutput:
        logits = None
        for layer in self.layer:
            hidden_states, logits = layer(hidden_states, padding_mask, logits, **kwargs)
        return BaseModelOutput(last_hidden_state=hidden_states)


class EABertPreTrainedModel(EAPreTrainedMixin, BertPreTrainedModel):
    config: EABertConfig
    config_class = EABertConfig
    _can_record_outputs = {"hidden_states": EABertLayer, "attentions": EABertSelfAttention}


class EABertModel(EABertPreTrainedModel):
    """BERT encoder with evolving attention. Inputs and outputs as `BertModel` (encoder use only)."""

    _no_split_modules = ["BertEmbeddings", "EABertLayer"]

    def __init__(self, config: EABertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        if config.is_decoder or config.add_cross_attention:
            raise ValueError(
                "EA-BERT is an encoder: `is_decoder` and `add_cross_attention` are not supported. "
                "Use EA-T5 or EA-Marian for decoders."
            )
        self.embeddings = BertEmbeddings(config)
        self.encoder = EABertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions:
        """
        Args:
            input_ids: [B, L] token ids (integer), or `inputs_embeds` [B, L, D].
            attention_mask: [B, L], 1 at real tokens and 0 at padding.
            token_type_ids, position_ids: [B, L], as in `BertModel`.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if encoder_hidden_states is not None or encoder_attention_mask is not None:
            raise ValueError("EA-BERT is an encoder and has no cross-attention: pass no encoder_hidden_states.")
        if input_ids is not None:
            check_token_ids(input_ids, self.config.vocab_size)
            batch_size, seq_length = input_ids.shape
        else:
            if inputs_embeds.dim() != 3:
                raise ValueError(
                    f"inputs_embeds must have shape [batch, seq_len, hidden], got {tuple(inputs_embeds.shape)}."
                )
            batch_size, seq_length = inputs_embeds.shape[:2]
        if position_ids is None and seq_length > self.config.max_position_embeddings:
            raise ValueError(
                f"Sequence length {seq_length} exceeds max_position_embeddings="
                f"{self.config.max_position_embeddings}; truncate the input (tokenizer(..., truncation=True))."
            )
        padding_mask = padding_mask_from(attention_mask, (batch_size, seq_length), "attention_mask")

        embedding_output = self.embeddings(
            input_ids=input_ids, position_ids=position_ids, token_type_ids=token_type_ids, inputs_embeds=inputs_embeds
        )
        sequence_output = self.encoder(embedding_output, padding_mask, **kwargs).last_hidden_state
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=sequence_output, pooler_output=pooled_output
        )


# The heads below build an EABertModel where transformers' heads build a BertModel. Heads with a per-example loss use
# transformers' own forward (it calls `self.bert`), so inputs, losses and outputs are exactly BERT's; the token-level
# heads (masked LM, token classification) normalise their loss by Trainer's `num_items_in_batch`, which BERT's don't.


class EABertForMaskedLM(EABertPreTrainedModel):
    _tied_weights_keys = BertForMaskedLM._tied_weights_keys
    # token-level loss: summed and divided by Trainer's `num_items_in_batch`, exact under gradient accumulation
    accepts_loss_kwargs = True

    def __init__(self, config: EABertConfig):
        super().__init__(config)
        self.bert = EABertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.post_init()

    get_output_embeddings = BertForMaskedLM.get_output_embeddings
    set_output_embeddings = BertForMaskedLM.set_output_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        """As `BertForMaskedLM.forward`; `labels` [B, L] with -100 at ignored tokens."""
        outputs = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        logits = self.cls(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits, labels, vocab_size=self.config.vocab_size, num_items_in_batch=num_items_in_batch
            )
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class EABertForSequenceClassification(EABertPreTrainedModel):
    def __init__(self, config: EABertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = EABertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    forward = BertForSequenceClassification.forward


class EABertForMultipleChoice(EABertPreTrainedModel):
    def __init__(self, config: EABertConfig):
        super().__init__(config)
        self.bert = EABertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    forward = BertForMultipleChoice.forward


class EABertForTokenClassification(EABertPreTrainedModel):
    # token-level loss: summed and divided by Trainer's `num_items_in_batch`, exact under gradient accumulation
    accepts_loss_kwargs = True

    def __init__(self, config: EABertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = EABertModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        """As `BertForTokenClassification.forward`; `labels` [B, L] with -100 at ignored tokens."""
        outputs = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, self.config, num_items_in_batch=num_items_in_batch)
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class EABertForQuestionAnswering(EABertPreTrainedModel):
    def __init__(self, config: EABertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = EABertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    forward = BertForQuestionAnswering.forward


__all__ = [
    "EABertForMaskedLM",
    "EABertForMultipleChoice",
    "EABertForQuestionAnswering",
    "EABertForSequenceClassification",
    "EABertForTokenClassification",
    "EABertModel",
    "EABertPreTrainedModel",
]
