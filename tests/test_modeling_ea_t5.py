"""EA-T5: the shared model tests over every head, plus what decoders must get right: no future leak, cached
generation equal to recomputation (greedy, beam, sampling), padding invariance of translations, and cache errors."""

import pytest
import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    DataCollatorForSeq2Seq,
    EncoderDecoderCache,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    T5Config,
    T5EncoderModel,
    T5ForConditionalGeneration,
    T5Model,
)

from ea_hf import (
    EAT5Config,
    EAT5EncoderModel,
    EAT5ForConditionalGeneration,
    EAT5Model,
    EvolvingAttentionCache,
    convert_checkpoint,
)

from ea_model_tester import EAModelTesterMixin, conv_parameters


TINY = dict(
    vocab_size=60,
    d_model=32,
    d_kv=8,
    d_ff=37,
    num_layers=3,
    num_decoder_layers=3,
    num_heads=4,
    dropout_rate=0.0,
    relative_attention_num_buckets=8,
    # T5's default init (factor 1.0) drives this tiny random model's activations to ~200, where fp32 batch-shape noise
    # alone reaches 1e-5 in the logits; half the scale keeps a meaningful 1e-5 test of cached vs recomputed decoding
    initializer_factor=0.5,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
)
ALL_CHAINS_OFF = {"ea_encoder": False, "ea_decoder": False, "ea_cross_attention": False}


def build(model_class=EAT5ForConditionalGeneration, **overrides):
    torch.manual_seed(0)
    model = model_class(EAT5Config(**{**TINY, "ea_alpha": 0.5, "ea_beta": 0.5, **overrides})).eval()
    with torch.no_grad():  # leave the identity init, so that the convs really mix rows, columns and heads
        for param in conv_parameters(model).values():
            param.normal_(std=0.3)
    return model


def source_batch():
    torch.manual_seed(1)
    input_ids = torch.randint(2, 60, (3, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    attention_mask[2, 4:] = 0
    return input_ids.masked_fill(attention_mask == 0, 0), attention_mask


class TestEAT5(EAModelTesterMixin):
    config_class = EAT5Config
    heads = [
        (EAT5Model, T5Model),
        (EAT5ForConditionalGeneration, T5ForConditionalGeneration),
        (EAT5EncoderModel, T5EncoderModel),
    ]
    ea_off = ALL_CHAINS_OFF
    attention_outputs = ("encoder_attentions", "decoder_attentions", "cross_attentions", "attentions")
    hidden_states_outputs = ("encoder_hidden_states", "decoder_hidden_states", "hidden_states")
    padded_inputs = ("input_ids", "attention_mask")
    rtol = 1e-5  # T5's intermediate hidden states reach ~100: compare relative to the tensor's magnitude
    trainer_heads = [EAT5ForConditionalGeneration]

    def make_config(self, **overrides):
        return EAT5Config(**{**TINY, **overrides})

    def vanilla_config(self, config):
        fields = {k: v for k, v in config.to_dict().items() if not k.startswith("ea_")}
        fields.pop("model_type"), fields.pop("auto_map")
        return T5Config(**fields)

    def make_inputs(self, model_class, labels=False):
        input_ids, attention_mask = source_batch()
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if model_class is not EAT5EncoderModel:
            inputs["decoder_input_ids"] = torch.randint(2, 60, (3, 5))
            if labels and model_class is EAT5ForConditionalGeneration:
                inputs["labels"] = torch.randint(2, 60, (3, 5))
        return inputs


def test_no_future_leak_with_every_chain_on():
    """Changing decoder tokens after position t leaves the logits at positions <= t exactly unchanged."""
    model = build()
    input_ids, attention_mask = source_batch()
    decoder_input_ids = torch.randint(2, 60, (3, 8))
    reference = model(input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
    for t in range(7):
        changed = decoder_input_ids.clone()
        changed[:, t + 1 :] = torch.randint(2, 60, changed[:, t + 1 :].shape)
        logits = model(input_ids, attention_mask=attention_mask, decoder_input_ids=changed).logits
        assert torch.equal(logits[:, : t + 1], reference[:, : t + 1])
        assert not torch.equal(logits[:, t + 1 :], reference[:, t + 1 :])


@pytest.mark.parametrize(
    "generation",
    [{}, {"num_beams": 4}, {"do_sample": True, "top_k": 0}],
    ids=["greedy", "beam4", "sampling"],
)
def test_cached_generation_equals_recomputation(generation):
    """use_cache=True gives the same tokens as use_cache=False, and, step by step, the same logits."""
    model = build()
    input_ids, attention_mask = source_batch()
    results = []
    for use_cache in (True, False):
        torch.manual_seed(123)
        results.append(
            model.generate(
                input_ids,
                attention_mask=attention_mask,
                max_new_tokens=12,
                min_new_tokens=12,
                use_cache=use_cache,
                output_logits=True,
                return_dict_in_generate=True,
                **generation,
            )
        )
    cached, recomputed = results
    assert cached.sequences.shape[1] == 13
    assert torch.equal(cached.sequences, recomputed.sequences)
    for step_cached, step_recomputed in zip(cached.logits, recomputed.logits, strict=True):
        torch.testing.assert_close(step_cached, step_recomputed, atol=1e-5, rtol=0)


def test_incremental_decoding_equals_the_full_forward():
    """Feeding the decoder one token at a time through the cache gives the full forward's logits."""
    model = build()
    input_ids, attention_mask = source_batch()
    decoder_input_ids = torch.randint(2, 60, (3, 6))
    full = model(input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
    encoder_outputs = model.get_encoder()(input_ids, attention_mask=attention_mask)
    cache, steps = None, []
    for t in range(decoder_input_ids.shape[1]):
        output = model(
            encoder_outputs=encoder_outputs,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids[:, t : t + 1],
            cache=cache,
            use_cache=True,
        )
        cache = output.cache
        steps.append(output.logits)
    assert isinstance(cache, EvolvingAttentionCache) and cache.ea_rows
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_cache_is_accepted_under_its_old_name():
    model = build()
    input_ids, attention_mask = source_batch()
    first = model(input_ids, attention_mask=attention_mask, decoder_input_ids=torch.zeros(3, 1, dtype=torch.long))
    with pytest.warns(FutureWarning, match="past_key_values"):
        second = model(
            input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=torch.full((3, 1), 5),
            past_key_values=first.cache,
        )
    full = model(input_ids, attention_mask=attention_mask, decoder_input_ids=torch.tensor([[0, 5]] * 3)).logits
    torch.testing.assert_close(second.logits[:, 0], full[:, 1], atol=1e-5, rtol=0)


def test_cache_from_another_model_is_refused():
    model = build()
    input_ids, attention_mask = source_batch()
    start = torch.zeros(3, 1, dtype=torch.long)
    vanilla = T5ForConditionalGeneration(T5Config(**TINY)).eval()
    vanilla_cache = vanilla(input_ids, attention_mask=attention_mask, decoder_input_ids=start).past_key_values
    assert isinstance(vanilla_cache, EncoderDecoderCache) and vanilla_cache.get_seq_length() == 1
    with pytest.raises(ValueError, match="another model"):
        model(input_ids, attention_mask=attention_mask, decoder_input_ids=start, cache=vanilla_cache)
    own_cache = model(input_ids, attention_mask=attention_mask, decoder_input_ids=start).cache
    with pytest.raises(ValueError, match="another batch"):  # this model's cache, but for three sequences, not two
        model(input_ids[:2], attention_mask=attention_mask[:2], decoder_input_ids=start[:2], cache=own_cache)
    other = build(num_heads=2, d_kv=16)
    other_cache = other(input_ids, attention_mask=attention_mask, decoder_input_ids=start).cache
    with pytest.raises(ValueError, match="another model"):
        model(input_ids, attention_mask=attention_mask, decoder_input_ids=torch.full((3, 1), 5), cache=other_cache)


def test_a_source_alone_and_padded_in_a_batch_translate_alike():
    """Padding invariance through the encoder and cross-attention chains, for generated tokens and logits."""
    model = build()
    input_ids, attention_mask = source_batch()
    batch = model.generate(
        input_ids, attention_mask=attention_mask, max_new_tokens=10, output_logits=True, return_dict_in_generate=True
    )
    for i in range(3):
        length = int(attention_mask[i].sum())
        alone = model.generate(
            input_ids[i : i + 1, :length], max_new_tokens=10, output_logits=True, return_dict_in_generate=True
        )
        assert torch.equal(alone.sequences[0], batch.sequences[i, : alone.sequences.shape[1]])
        for step_alone, step_batch in zip(alone.logits, batch.logits):
            torch.testing.assert_close(step_alone[0], step_batch[i], atol=1e-5, rtol=0)


def test_seq2seq_trainer_trains(tmp_path):
    model = build()
    input_ids, attention_mask = source_batch()
    examples = [
        {"input_ids": input_ids[i, : int(attention_mask[i].sum())].tolist(), "labels": [5, 6, 7, 1]} for i in range(3)
    ] * 4
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=4,
        learning_rate=3e-3,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
    )
    collator = DataCollatorForSeq2Seq(tokenizer=None, model=model, label_pad_token_id=-100)

    class PadOnly:  # the collator pads with a tokenizer; a tiny stand-in that pads input ids with 0
        pad_token_id, padding_side = 0, "right"

        def pad(self, features, return_tensors="pt", **kwargs):
            length = max(len(f["input_ids"]) for f in features)
            ids = torch.tensor([f["input_ids"] + [0] * (length - len(f["input_ids"])) for f in features])
            return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    collator.tokenizer = PadOnly()
    trainer = Seq2SeqTrainer(model=model.train(), args=args, train_dataset=examples, data_collator=collator)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert all(param.grad is None or torch.isfinite(param.grad).all() for param in model.parameters())


def test_vanilla_t5_checkpoint_loads_and_converts(tmp_path):
    torch.manual_seed(0)
    vanilla = T5ForConditionalGeneration(T5Config(**TINY)).eval()
    vanilla.save_pretrained(tmp_path / "t5")
    model, info = EAT5ForConditionalGeneration.from_pretrained(tmp_path / "t5", output_loading_info=True)
    # three chains, each without a conv in its first block
    assert set(info["missing_keys"]) == set(conv_parameters(model)) and len(info["missing_keys"]) == 3 * 2 * 2
    assert not info["unexpected_keys"]
    off = EAT5ForConditionalGeneration.from_pretrained(tmp_path / "t5", ea_alpha=0.0, ea_beta=0.0).eval()
    vanilla.set_attn_implementation("eager")
    input_ids, attention_mask = source_batch()
    expected = vanilla.generate(input_ids, attention_mask=attention_mask, max_new_tokens=8)
    assert torch.equal(off.generate(input_ids, attention_mask=attention_mask, max_new_tokens=8), expected)

    out = convert_checkpoint(str(tmp_path / "t5"), str(tmp_path / "ea-t5"), ea_beta=0.3)
    converted = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert isinstance(converted, EAT5ForConditionalGeneration) and converted.config.ea_beta == 0.3


def test_bad_decoder_input():
    model = build()
    input_ids, attention_mask = source_batch()
    with pytest.raises(TypeError, match="integer token ids"):
        model(input_ids, attention_mask=attention_mask, decoder_input_ids=torch.rand(3, 4))
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(
            input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=torch.ones(3, 4, dtype=torch.long),
            decoder_attention_mask=torch.ones(3, 3),
        )
    with pytest.raises(ValueError, match="tokenizer does not match the model"):
        model(input_ids, attention_mask=attention_mask, decoder_input_ids=torch.full((3, 2), 60))
    with pytest.raises(ValueError, match="encoder_attention_mask must have shape|attention_mask must have shape"):
        model(input_ids, attention_mask=attention_mask[:, :5], decoder_input_ids=torch.ones(3, 4, dtype=torch.long))
