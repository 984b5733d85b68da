"""Tests shared by the EA decoder-only LMs (EA-Llama, EA-Qwen2): no future leak, left and right padding invariance,
cached generation equal to recomputation (greedy, beam, sampling) and to the full forward, static and foreign caches
refused, vanilla checkpoints and their conversion, and the text-generation pipeline (in process and as remote code).

A subclass sets `config_class`, `model_class` (the LM head), `vanilla_class`, `vanilla_config_class` and `tiny` (a tiny
config with vocabulary 60, pad 0, bos 1, eos 2).
"""

import json

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    BertModel,
    DynamicCache,
    pipeline,
)

from ea_hf import EvolvingAttentionDynamicCache, convert_checkpoint
from scripts.examples.train_tokenizers import train_clm_tokenizer

from ea_model_tester import conv_parameters, run_without_ea_hf
from seq2seq_tester import assert_cached_generation_equals_recomputation, build_ea


PROMPT_LENGTHS = (7, 4, 6)


def prompts(padding_side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt ids [3, 7] (vocabulary 60, ids >= 3) and their mask: the second and third padded (with 0) on the
    `padding_side`, as `generate` takes them (left) or as training batches come (right)."""
    torch.manual_seed(1)
    input_ids = torch.randint(3, 60, (3, max(PROMPT_LENGTHS)))
    positions = torch.arange(max(PROMPT_LENGTHS))
    lengths = torch.tensor(PROMPT_LENGTHS)[:, None]
    real = positions >= max(PROMPT_LENGTHS) - lengths if padding_side == "left" else positions < lengths
    return input_ids.masked_fill(~real, 0), real.long()


def left_padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """The positions `generate` gives a left-padded batch: counted from each sequence's first real token."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


class CausalLMTesterMixin:
    config_class: type
    model_class: type
    vanilla_class: type
    vanilla_config_class: type
    tiny: dict
    pipeline_as_remote_code = True  # also run the pipeline where ea_hf cannot be imported

    def build(self, **overrides):
        return build_ea(self.config_class, self.model_class, self.tiny, **overrides)

    def test_conv_channels_are_the_query_heads(self):
        model = self.build()
        assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped-query attention
        convs = [module.conv for module in model.modules() if hasattr(module, "conv") and module.conv is not None]
        assert len(convs) == model.config.num_hidden_layers - 1
        assert all(conv.in_channels == conv.out_channels == model.config.num_attention_heads for conv in convs)

    def test_no_future_leak(self):
        """Changing tokens after position t leaves the logits at positions <= t exactly unchanged."""
        model = self.build()
        input_ids = torch.randint(3, 60, (2, 8))
        reference = model(input_ids).logits
        for t in range(7):
            changed = input_ids.clone()
            changed[:, t + 1 :] = torch.randint(3, 60, changed[:, t + 1 :].shape)
            logits = model(changed).logits
            assert torch.equal(logits[:, : t + 1], reference[:, : t + 1])
            assert not torch.equal(logits[:, t + 1 :], reference[:, t + 1 :])

    @pytest.mark.parametrize("padding_side", ["left", "right"])
    def test_a_sequence_alone_and_padded_in_a_batch_give_the_same_logits(self, padding_side):
        model = self.build()
        input_ids, attention_mask = prompts(padding_side)
        position_ids = left_padded_positions(attention_mask) if padding_side == "left" else None
        batch = model(input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        for i in range(3):
            real = attention_mask[i].bool()
            alone = model(input_ids[i : i + 1, real]).logits
            torch.testing.assert_close(batch[i, real], alone[0], atol=1e-5, rtol=0)

    def test_a_prompt_alone_and_left_padded_in_a_batch_generate_alike(self):
        model = self.build()
        input_ids, attention_mask = prompts("left")
        kwargs = dict(max_new_tokens=10, min_new_tokens=10, output_logits=True, return_dict_in_generate=True)
        batch = model.generate(input_ids, attention_mask=attention_mask, **kwargs)
        for i in range(3):
            alone = model.generate(input_ids[i : i + 1, attention_mask[i].bool()], **kwargs)
            assert torch.equal(alone.sequences[0, -10:], batch.sequences[i, -10:])
            for step_alone, step_batch in zip(alone.logits, batch.logits, strict=True):
                torch.testing.assert_close(step_alone[0], step_batch[i], atol=1e-5, rtol=0)

    @pytest.mark.parametrize(
        "generation",
        [{}, {"num_beams": 4}, {"do_sample": True, "top_k": 0}],
        ids=["greedy", "beam4", "sampling"],
    )
    def test_cached_generation_equals_recomputation(self, generation):
        """use_cache=True gives the same tokens as use_cache=False, and, step by step, the same logits."""
        input_ids, attention_mask = prompts("left")
        cached = assert_cached_generation_equals_recomputation(self.build(), input_ids, attention_mask, generation)
        assert cached.sequences.shape[1] == input_ids.shape[1] + 12

    def test_incremental_decoding_equals_the_full_forward(self):
        """A left-padded prompt through the cache, then one token at a time: the full forward's logits."""
        model = self.build()
        input_ids, attention_mask = prompts("left")
        continuation = torch.randint(3, 60, (3, 4))
        full_ids = torch.cat([input_ids, continuation], dim=1)
        full_mask = torch.cat([attention_mask, torch.ones_like(continuation)], dim=1)
        positions = left_padded_positions(full_mask)
        full = model(full_ids, attention_mask=full_mask, position_ids=positions).logits
        length = input_ids.shape[1]
        output = model(input_ids, attention_mask=attention_mask, position_ids=positions[:, :length], use_cache=True)
        steps = [output.logits]
        for t in range(length, full_ids.shape[1]):
            output = model(
                full_ids[:, t : t + 1],
                attention_mask=full_mask[:, : t + 1],
                position_ids=positions[:, t : t + 1],
                cache=output.cache,
            )
            steps.append(output.logits)
        assert isinstance(output.cache, EvolvingAttentionDynamicCache) and output.cache.ea_rows
        real = full_mask.bool()
        torch.testing.assert_close(torch.cat(steps, dim=1)[real], full[real], atol=1e-5, rtol=0)

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_half_precision_is_finite(self, dtype):
        """Left-padded prompts (their padded rows see no key at all) in bf16 and fp16: finite logits, cached
        generation runs."""
        model = self.build().to(dtype)
        input_ids, attention_mask = prompts("left")
        logits = model(input_ids, attention_mask=attention_mask).logits
        assert logits.dtype == dtype and torch.isfinite(logits).all()
        output = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=4, min_new_tokens=4)
        assert output.shape == (3, input_ids.shape[1] + 4)

    def test_static_and_foreign_caches_are_refused(self):
        model = self.build()
        input_ids, attention_mask = prompts("left")
        with pytest.raises(ValueError, match="static and other fixed-size caches"):
            model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=2, cache_implementation="static")
        vanilla = self.vanilla_class(self.vanilla_config_class(**self.tiny)).eval()
        vanilla_cache = vanilla(input_ids, attention_mask=attention_mask, use_cache=True).cache
        assert type(vanilla_cache) is DynamicCache and vanilla_cache.get_seq_length() == input_ids.shape[1]
        with pytest.raises(ValueError, match="another model"):
            model(input_ids[:, :1], cache=vanilla_cache)
        own_cache = model(input_ids, attention_mask=attention_mask, use_cache=True).cache
        with pytest.raises(ValueError, match="another batch"):  # this model's cache, but for three sequences, not two
            model(input_ids[:2, :1], cache=own_cache)
        other_cache = self.build(num_key_value_heads=4)(input_ids, use_cache=True).cache
        with pytest.raises(ValueError, match="another model"):
            model(input_ids[:, :1], cache=other_cache)

    def save_vanilla(self, folder):
        torch.manual_seed(0)
        vanilla = self.vanilla_class(self.vanilla_config_class(**self.tiny)).eval()
        vanilla.save_pretrained(folder)
        return vanilla

    def test_vanilla_checkpoint_loads_and_generates_alike(self, tmp_path):
        vanilla = self.save_vanilla(tmp_path)
        model, info = self.model_class.from_pretrained(tmp_path, output_loading_info=True)
        assert set(info["missing_keys"]) == set(conv_parameters(model))
        assert len(info["missing_keys"]) == 2 * (self.tiny["num_hidden_layers"] - 1)  # weight and bias, no first conv
        assert not info["unexpected_keys"] and not info["mismatched_keys"]
        off = self.model_class.from_pretrained(tmp_path, ea_alpha=0.0, ea_beta=0.0).eval()
        vanilla.set_attn_implementation("eager")
        input_ids, attention_mask = prompts("left")
        kwargs = dict(attention_mask=attention_mask, max_new_tokens=8, num_beams=2)
        assert torch.equal(off.generate(input_ids, **kwargs), vanilla.generate(input_ids, **kwargs))

    def test_convert_checkpoint_and_other_architectures(self, tmp_path):
        vanilla = self.save_vanilla(tmp_path / "vanilla")
        out = convert_checkpoint(str(tmp_path / "vanilla"), str(tmp_path / "ea"), ea_beta=0.3)
        converted = AutoModelForCausalLM.from_pretrained(out)
        assert isinstance(converted, self.model_class) and converted.config.ea_beta == 0.3
        module = self.model_class.__module__.split(".")[-1]
        assert converted.config.auto_map["AutoModelForCausalLM"] == f"{module}.{self.model_class.__name__}"
        assert torch.equal(converted.lm_head.weight, vanilla.lm_head.weight)
        BertModel(BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                             intermediate_size=37)).save_pretrained(tmp_path / "bert")  # fmt: skip
        with pytest.raises(ValueError, match="holds a `bert` checkpoint"):
            self.config_class.from_pretrained(tmp_path / "bert")
        assert AutoConfig.from_pretrained(tmp_path / "ea").model_type == self.config_class.model_type

    def test_text_generation_pipeline_in_process_and_as_remote_code(self, tmp_path):
        texts = ["In the beginning God created the heaven and the earth.", "And God said, Let there be light."]
        tokenizer = AutoTokenizer.from_pretrained(train_clm_tokenizer(texts, tmp_path / "tokenizer", vocab_size=300))
        model = self.build(vocab_size=len(tokenizer))
        folder = tmp_path / "model"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        kwargs = dict(max_new_tokens=6, do_sample=False)
        expected = pipeline("text-generation", model=model, tokenizer=tokenizer)(["And God", "In the"], **kwargs)
        assert all(out[0]["generated_text"].startswith(prompt) for out, prompt in zip(expected, ["And God", "In the"]))
        from_folder = pipeline("text-generation", model=str(folder))(["And God", "In the"], **kwargs)
        assert from_folder == expected
        if not self.pipeline_as_remote_code:
            return
        result = run_without_ea_hf(
            f"""
            import json
            from transformers import pipeline
            generator = pipeline("text-generation", model={str(folder)!r}, trust_remote_code=True)
            assert type(generator.model).__module__.startswith("transformers_modules")
            print(json.dumps(generator(["And God", "In the"], max_new_tokens=6, do_sample=False)))
            """,
            tmp_path,
        )
        assert json.loads(result.stdout.strip().splitlines()[-1]) == expected
