"""A `translation` pipeline for any seq2seq LM, which transformers 5.24 no longer ships.

`pipeline("translation", ...)` raises KeyError in transformers 5.24. This module brings it back in two ways:

- in-process: `ea_hf.register_translation_pipeline()` (run when the package is imported) registers
  `TranslationPipeline` for the task (and lifts the task's removal), after which
  `pipeline("translation", model=model, tokenizer=tokenizer)` works;
- as remote code: `ea_hf.save_translation_pipeline(model, tokenizer, folder)` (or `pipe.save_pretrained(folder)`)
  writes the model, the tokenizer, this file, and `custom_pipelines` in config.json, so that
  `pipeline("translation", model=folder, trust_remote_code=True)` works where this package is not installed.

Registering and saving live in `ea_hf/custom_pipelines.py`, which is not copied into folders.

This module is copied into saved folders as remote code: it must import only torch and transformers (no package
imports, absolute or relative).
"""

import os
from typing import Any

from transformers import AutoModelForSeq2SeqLM, GenerationConfig, Pipeline
from transformers.utils import ModelOutput, logging


logger = logging.get_logger(__name__)

TASK = "translation"
PIPELINE_TYPE = "text"
AUTO_MODEL_CLASS = AutoModelForSeq2SeqLM
OUTPUT_KEY = "translation_text"
TOKEN_IDS_KEY = "translation_token_ids"

# Names used in T5's task prefixes ("translate English to German: "). Codes not listed are used as given.
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "de": "German", "fr": "French", "ro": "Romanian"}
# ISO 639-2 codes some checkpoints use for the same languages (Marian tokenizers' `source_lang`, e.g. "eng").
_ISO_639_2 = {
    "eng": "en",
    "spa": "es",
    "deu": "de",
    "ger": "de",
    "fra": "fr",
    "fre": "fr",
    "ron": "ro",
    "rum": "ro",
}
# A tokenizer without a real maximum length reports a huge `model_max_length` (transformers' VERY_LARGE_INTEGER).
_NO_MAX_LENGTH = int(1e6)


def language_name(code: str) -> str:
    """'de' -> 'German'; codes not in `LANGUAGE_NAMES` (and full names) are returned as given."""
    return LANGUAGE_NAMES.get(code.lower(), code) if isinstance(code, str) else code


def _same_language(a: str, b: str) -> bool:
    def norm(code):
        code = str(code).strip().lower().replace("-", "_").split("_")[0]
        return _ISO_639_2.get(code, code)

    return norm(a) == norm(b)


def _is_t5(config) -> bool:
    return "t5" in (getattr(config, "model_type", "") or "").lower()


def _is_marian(config) -> bool:
    return "marian" in (getattr(config, "model_type", "") or "").lower()


def _new_tokens(params: dict) -> tuple[str, int] | None:
    """The generation parameter in `params` that bounds the output, and how many new tokens it allows."""
    if params.get("max_new_tokens") is not None:
        return "max_new_tokens", params["max_new_tokens"]
    if params.get("max_length") is not None:
        return "max_length", params["max_length"] - 1  # an encoder-decoder's max_length counts the start token
    return None


class TranslationPipeline(Pipeline):
    """Translate text with any seq2seq LM (`AutoModelForSeq2SeqLM`): T5-style, Marian-style, or an EA model.

    ```python
    >>> translator = pipeline("translation", model=folder, trust_remote_code=True)
    >>> translator("How old are you?", src_lang="en", tgt_lang="de", max_new_tokens=40)
    [{'translation_text': 'Wie alt bist du?'}]
    ```

    Input: a string or a list of strings (or a dataset / generator of strings). Output, as in transformers 4.x: for a
    string, a list with one `{"translation_text": ...}` per returned sequence; for a list of strings, one such list per
    input, flattened to one dict per input when a single sequence is returned per input.

    Call (or init) parameters:
        src_lang, tgt_lang: language codes ("en", "de", ...). T5-style models (model_type containing "t5") get the
            prefix "translate {Source} to {Target}: " with the languages' names (en, es, de, fr, ro are named; other
            codes are used as given). Marian-style models have their languages fixed by the checkpoint: the codes are
            checked against the tokenizer's `source_lang`/`target_lang` where it has them, and a multilingual Marian
            tokenizer gets the target token `>>tgt<<`.
        prefix: an explicit prefix put before every input (wins over src_lang/tgt_lang).
        truncation: truncate inputs to the tokenizer's `model_max_length`; by default, where the tokenizer has one.
        return_tensors: return `{"translation_token_ids": tensor}` instead of text.
        clean_up_tokenization_spaces, skip_special_tokens (default True): passed to `tokenizer.decode`.
        anything else (`max_new_tokens`, `num_beams`, `do_sample`, `num_return_sequences`, `generation_config`, ...):
            passed to `model.generate`. A decoder with a position table (Marian's `max_position_embeddings` N) adds
            at most N tokens: a longer default length is cut to N, and asking for more is a `ValueError`.
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _pipeline_calls_generate = True
    # Used only where neither the call nor the model's generation config sets them
    _default_generation_config = GenerationConfig(max_new_tokens=256)
    # Set by `ea_hf.custom_pipelines.register_pipeline` where ea_hf is installed; None in a remote copy.
    _save_pipeline = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.tokenizer is None:
            raise ValueError("TranslationPipeline needs a tokenizer: pass `tokenizer=` or a folder that has one.")
        if not self.model.can_generate():
            raise ValueError(
                f"TranslationPipeline needs a model that can generate; {type(self.model).__name__} can't."
            )
        vocab_size = getattr(self.model.config, "vocab_size", None)
        if vocab_size is not None and len(self.tokenizer) > vocab_size:
            raise ValueError(
                f"The tokenizer has {len(self.tokenizer)} tokens but the model's vocabulary has {vocab_size}: they do "
                "not belong together. Load the tokenizer saved with this model."
            )
        if not getattr(self.model.config, "is_encoder_decoder", False):
            logger.warning(
                f"{type(self.model).__name__} is not an encoder-decoder model: TranslationPipeline expects a seq2seq"
                " LM (AutoModelForSeq2SeqLM); a decoder-only model returns the input followed by its continuation."
            )

    def _sanitize_parameters(
        self,
        src_lang=None,
        tgt_lang=None,
        prefix=None,
        truncation=None,
        return_tensors=None,
        return_text=None,
        clean_up_tokenization_spaces=None,
        skip_special_tokens=None,
        **generate_kwargs,
    ):
        preprocess_params = {}
        for name, value in (("src_lang", src_lang), ("tgt_lang", tgt_lang), ("prefix", prefix)):
            if value is not None:
                preprocess_params[name] = value
        if truncation is not None:
            preprocess_params["truncation"] = truncation

        postprocess_params = {}
        if return_tensors is not None:
            postprocess_params["return_tensors"] = return_tensors
        if return_text is not None:
            postprocess_params["return_tensors"] = not return_text
        if clean_up_tokenization_spaces is not None:
            postprocess_params["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        if skip_special_tokens is not None:
            postprocess_params["skip_special_tokens"] = skip_special_tokens

        forward_params = generate_kwargs
        if getattr(self, "assistant_model", None) is not None:
            forward_params["assistant_model"] = self.assistant_model
        if getattr(self, "assistant_tokenizer", None) is not None:
            forward_params["tokenizer"] = self.tokenizer
            forward_params["assistant_tokenizer"] = self.assistant_tokenizer
        return preprocess_params, forward_params, postprocess_params

    def __call__(self, inputs, *args, **kwargs):
        """Translate `inputs` (a string, or a list of strings); see the class docstring for the parameters."""
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        if isinstance(inputs, list):
            if not inputs:
                raise ValueError("TranslationPipeline got an empty list: pass at least one text to translate.")
            for text in inputs:
                self._check_text(text)
        elif isinstance(inputs, str):
            self._check_text(inputs)
        result = super().__call__(inputs, *args, **kwargs)
        if isinstance(inputs, list) and all(isinstance(item, list) and len(item) == 1 for item in result):
            return [item[0] for item in result]
        return result

    @staticmethod
    def _check_text(text):
        if not isinstance(text, str):
            raise TypeError(f"TranslationPipeline translates strings, got {type(text).__name__}: {text!r}")
        if not text.strip():
            raise ValueError("TranslationPipeline got an empty text: there is nothing to translate.")

    def source_prefix(
        self, src_lang: str | None = None, tgt_lang: str | None = None, prefix: str | None = None
    ) -> str:
        """The text put before every input, for these languages (see the class docstring)."""
        if prefix is not None:
            return prefix
        config = self.model.config
        if _is_t5(config):
            if src_lang is None and tgt_lang is None:
                return getattr(self, "prefix", None) or ""  # the model config's `prefix`, if any
            if src_lang is None or tgt_lang is None:
                raise ValueError("A T5-style model needs both `src_lang` and `tgt_lang` (or an explicit `prefix`).")
            return f"translate {language_name(src_lang)} to {language_name(tgt_lang)}: "
        checkpoint_langs = {
            "src_lang": getattr(self.tokenizer, "source_lang", None),
            "tgt_lang": getattr(self.tokenizer, "target_lang", None),
        }
        for name, given in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
            fixed = checkpoint_langs[name]
            if given is not None and fixed is not None and not _same_language(given, fixed):
                raise ValueError(
                    f"{name}={given!r}, but this checkpoint translates from {checkpoint_langs['src_lang']!r} to"
                    f" {checkpoint_langs['tgt_lang']!r}: its languages are fixed."
                )
        target_codes = getattr(self.tokenizer, "supported_language_codes", None) or []
        if target_codes and tgt_lang is not None:  # a multilingual Marian checkpoint picks its target by a token
            code = tgt_lang if tgt_lang.startswith(">>") else f">>{tgt_lang}<<"
            if code not in target_codes:
                raise ValueError(f"tgt_lang={tgt_lang!r} is not one of this checkpoint's targets: {target_codes}")
            return f"{code} "
        if (src_lang is not None or tgt_lang is not None) and not _is_marian(config):
            logger.warning_once(
                f"src_lang/tgt_lang are ignored for model type {config.model_type!r}: only T5-style models take a"
                " language prefix (pass `prefix=` to set one yourself)."
            )
        return getattr(self, "prefix", None) or ""

    def preprocess(self, text, src_lang=None, tgt_lang=None, prefix=None, truncation=None):
        self._check_text(text)
        max_length = getattr(self.tokenizer, "model_max_length", None)
        has_max_length = max_length is not None and max_length < _NO_MAX_LENGTH
        if truncation is None:
            truncation = has_max_length
        elif truncation and not has_max_length:
            raise ValueError("truncation=True, but the tokenizer has no `model_max_length` to truncate to.")
        encoded = self.tokenizer(
            self.source_prefix(src_lang, tgt_lang, prefix) + text,
            truncation=truncation,
            max_length=max_length if truncation else None,
            return_tensors="pt",
        )
        model_inputs = {"input_ids": encoded["input_ids"]}
        if "attention_mask" in encoded:
            model_inputs["attention_mask"] = encoded["attention_mask"]
        return model_inputs

    def _forward(self, model_inputs, **generate_kwargs):
        in_b = model_inputs["input_ids"].shape[0]
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs, **self._length_cap(generate_kwargs))
        output = self.model.generate(**model_inputs, **generate_kwargs)
        output_ids = output.sequences if isinstance(output, ModelOutput) else output
        out_b = output_ids.shape[0]
        return {"output_ids": output_ids.reshape(in_b, out_b // in_b, *output_ids.shape[1:])}

    def _decoder_positions(self) -> int | None:
        """How many new tokens the decoder's position table allows: its `max_position_embeddings` N (the start
        token and the first N - 1 new tokens fill it; the last one is never fed back). None for a model without a
        table: T5-style (relative positions) or decoder-only."""
        config = self.model.config
        if _is_t5(config) or not getattr(config, "is_encoder_decoder", False):
            return None
        return getattr(config, "max_position_embeddings", None)

    def _length_cap(self, generate_kwargs: dict) -> dict:
        """`{"max_new_tokens": N}` where the length that would apply without the user's asking (the model's
        generation config's, or the pipeline's default) runs past the decoder's N positions; {} otherwise. Raises a
        `ValueError` where the call or init parameters ask for more than N new tokens."""
        limit = self._decoder_positions()
        if limit is None:
            return {}
        if "generation_config" not in generate_kwargs:
            generate_kwargs = {**self._generate_kwargs, **generate_kwargs}
        user_config = generate_kwargs.get("generation_config")
        asked = _new_tokens({**(user_config.to_diff_dict() if user_config is not None else {}), **generate_kwargs})
        if asked is not None:
            name, new_tokens = asked
            if new_tokens > limit:
                raise ValueError(
                    f"{name} asks for {new_tokens} new tokens, but the decoder of this model has {limit} positions"
                    f" (max_position_embeddings): pass max_new_tokens={limit} or less."
                )
            return {}
        params = self._get_set_generation_params(generate_kwargs)
        applied = _new_tokens(params) or _new_tokens(self._generation_defaults)
        return {"max_new_tokens": limit} if applied is not None and applied[1] > limit else {}

    def postprocess(
        self, model_outputs, return_tensors=False, clean_up_tokenization_spaces=None, skip_special_tokens=True
    ):
        records = []
        for output_ids in model_outputs["output_ids"][0]:
            if return_tensors:
                records.append({TOKEN_IDS_KEY: output_ids})
            else:
                text = self.tokenizer.decode(
                    output_ids,
                    skip_special_tokens=skip_special_tokens,
                    clean_up_tokenization_spaces=clean_up_tokenization_spaces,
                )
                records.append({OUTPUT_KEY: text})
        return records

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any):
        """Save the model, the tokenizer and this pipeline's code, so that the folder loads with
        `pipeline("translation", model=save_directory, trust_remote_code=True)`.

        Where ea_hf is installed this is `ea_hf.save_translation_pipeline`; a remote copy saves with transformers' own
        code for registered custom pipelines (the config's `custom_pipelines` is set for the save only)."""
        if self._save_pipeline is not None:
            self._save_pipeline(type(self), self.model, self.tokenizer, save_directory, **kwargs)
            return
        type(self)._registered_impl = {TASK: {"impl": type(self), "pt": (AUTO_MODEL_CLASS,), "type": PIPELINE_TYPE}}
        config = self.model.config
        previous = config.__dict__.get("custom_pipelines")
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            if previous is None:
                config.__dict__.pop("custom_pipelines", None)
            else:
                config.custom_pipelines = previous


__all__ = ["LANGUAGE_NAMES", "TranslationPipeline", "language_name"]
