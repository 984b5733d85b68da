"""Decoder tests shared by the EA encoder-decoders (EA-T5, EA-Marian): no future leak, cached generation equal to
recomputation (greedy, beam, sampling) and to the full forward, the cache under both names, foreign caches refused,
padding invariance of translations, Seq2SeqTrainer, and bad decoder input.

A subclass sets `config_class`, `model_class` (the LM head), `vanilla_class`, `vanilla_config_class`, `tiny` (a tiny
config with vocabulary 60 and pad = decoder start = 0) and `other_heads` (overrides that change the head count).
"""

import pytest
import torch
from transformers import DataCollatorForSeq2Seq, EncoderDecoderCache, Seq2SeqTrainer, Seq2SeqTrainingArguments

from ea_hf import EvolvingAttentionCache

from ea_model_tester import conv_parameters


def source_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Source ids [3, 9] (vocabulary 60, ids >= 2) and their mask: the second and third sources padded with 0."""
    torch.manual_seed(1)
    input_ids = torch.randint(2, 60, (3, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    attention_mask[2, 4:] = 0
    return input_ids.masked_fill(attention_mask == 0, 0), attention_mask


def build_ea(config_class, model_class, tiny: dict, **overrides):
    """An EA model with every chain on, alpha = beta = 0.5, in eval mode; its convs are drawn far from the identity
    init, so that they really mix rows, columns and heads."""
    torch.manual_seed(0)
    model = model_class(config_class(**{**tiny, "ea_alpha": 0.5, "ea_beta": 0.5, **overrides})).eval()
    with torch.no_grad():
        for param in conv_parameters(model).values():
            param.normal_(std=0.3)
    return model


def assert_cached_generation_equals_recomputation(model, input_ids, attention_mask, generation: dict):
    """`generate()` of 12 new tokens with and without the cache (the same seed before each): the same tokens, and step
    by step the same logits (1e-5). Returns the cached run's output."""
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
    assert torch.equal(cached.sequences, recomputed.sequences)
    for step_cached, step_recomputed in zip(cached.logits, recomputed.logits, strict=True):
        torch.testing.assert_close(step_cached, step_recomputed, atol=1e-5, rtol=0)
    return cached


class Seq2SeqTesterMixin:
    config_class: type
    model_class: type
    vanilla_class: type
    vanilla_config_class: type
    tiny: dict
    other_heads: dict

    def build(self, **overrides):
        return build_ea(self.config_class, self.model_class, self.tiny, **overrides)

    def test_no_future_leak_with_every_chain_on(self):
        """Changing decoder tokens after position t leaves the logits at positions <= t exactly unchanged."""
        model = self.build()
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
    def test_cached_generation_equals_recomputation(self, generation):
        """use_cache=True gives the same tokens as use_cache=False, and, step by step, the same logits."""
        input_ids, attention_mask = source_batch()
        cached = assert_cached_generation_equals_recomputation(self.build(), input_ids, attention_mask, generation)
        assert cached.sequences.shape[1] == 13

    def test_incremental_decoding_equals_the_full_forward(self):
        """Feeding the decoder one token at a time through the cache gives the full forward's logits."""
        model = self.build()
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

    def test_cache_is_accepted_under_its_old_name(self):
        model = self.build()
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

    def test_cache_from_another_model_is_refused(self):
        model = self.build()
        input_ids, attention_mask = source_batch()
        start = torch.zeros(3, 1, dtype=torch.long)
        vanilla = self.vanilla_class(self.vanilla_config_class(**self.tiny)).eval()
        vanilla_cache = vanilla(input_ids, attention_mask=attention_mask, decoder_input_ids=start).past_key_values
        assert isinstance(vanilla_cache, EncoderDecoderCache) and vanilla_cache.get_seq_length() == 1
        with pytest.raises(ValueError, match="another model"):
            model(input_ids, attention_mask=attention_mask, decoder_input_ids=start, cache=vanilla_cache)
        own_cache = model(input_ids, attention_mask=attention_mask, decoder_input_ids=start).cache
        with pytest.raises(ValueError, match="another batch"):  # this model's cache, but for three sequences, not two
            model(input_ids[:2], attention_mask=attention_mask[:2], decoder_input_ids=start[:2], cache=own_cache)
        other_cache = self.build(**self.other_heads)(
            input_ids, attention_mask=attention_mask, decoder_input_ids=start
        ).cache
        with pytest.raises(ValueError, match="another model"):
            model(input_ids, attention_mask=attention_mask, decoder_input_ids=torch.full((3, 1), 5), cache=other_cache)

    def test_a_source_alone_and_padded_in_a_batch_translate_alike(self):
        """Padding invariance through the encoder and cross-attention chains, for generated tokens and logits."""
        model = self.build()
        input_ids, attention_mask = source_batch()
        kwargs = dict(max_new_tokens=10, output_logits=True, return_dict_in_generate=True)
        batch = model.generate(input_ids, attention_mask=attention_mask, **kwargs)
        for i in range(3):
            alone = model.generate(input_ids[i : i + 1, : int(attention_mask[i].sum())], **kwargs)
            assert torch.equal(alone.sequences[0], batch.sequences[i, : alone.sequences.shape[1]])
            for step_alone, step_batch in zip(alone.logits, batch.logits):
                torch.testing.assert_close(step_alone[0], step_batch[i], atol=1e-5, rtol=0)

    def test_seq2seq_trainer_trains(self, tmp_path):
        model = self.build()
        input_ids, attention_mask = source_batch()
        examples = [
            {"input_ids": input_ids[i, : int(attention_mask[i].sum())].tolist(), "labels": [5, 6, 7, 1]}
            for i in range(3)
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

        class PadOnly:  # the collator pads with a tokenizer; a tiny stand-in that pads input ids with 0
            pad_token_id, padding_side = 0, "right"

            def pad(self, features, return_tensors="pt", **kwargs):
                length = max(len(f["input_ids"]) for f in features)
                ids = torch.tensor([f["input_ids"] + [0] * (length - len(f["input_ids"])) for f in features])
                return {"input_ids": ids, "attention_mask": (ids != 0).long()}

        collator = DataCollatorForSeq2Seq(tokenizer=PadOnly(), model=model, label_pad_token_id=-100)
        trainer = Seq2SeqTrainer(model=model.train(), args=args, train_dataset=examples, data_collator=collator)
        trainer.train()
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        assert len(losses) == 4 and losses[-1] < losses[0]
        assert all(param.grad is None or torch.isfinite(param.grad).all() for param in model.parameters())

    def test_bad_input(self):
        model = self.build()
        input_ids, attention_mask = source_batch()
        decoder_input_ids = torch.ones(3, 4, dtype=torch.long)
        with pytest.raises(TypeError, match="decoder_input_ids must hold integer token ids"):
            model(input_ids, attention_mask=attention_mask, decoder_input_ids=torch.rand(3, 4))
        with pytest.raises(TypeError, match="input_ids must hold integer token ids"):
            model(input_ids.float(), attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
        with pytest.raises(ValueError, match="decoder_input_ids must have shape"):
            model(input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids[0])
        with pytest.raises(ValueError, match="attention_mask must have shape"):
            model(
                input_ids,
                attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids,
                decoder_attention_mask=torch.ones(3, 3),
            )
        with pytest.raises(ValueError, match="tokenizer does not match the model"):
            model(input_ids, attention_mask=attention_mask, decoder_input_ids=torch.full((3, 2), 60))
        with pytest.raises(ValueError, match="attention_mask must have shape"):
            model(input_ids, attention_mask=attention_mask[:, :5], decoder_input_ids=decoder_input_ids)
