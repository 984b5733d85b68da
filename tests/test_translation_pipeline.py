"""The `translation` pipeline (removed from transformers 5.24) brought back by `ea_hf.pipeline_translation`: its
output, generation parameters, languages, truncation, equality with a manual `generate`, registration with
`transformers.pipeline`, and the saved folder loading as remote code where ea_hf cannot be imported.

The models are tiny vanilla Marian and T5 models with a SentencePiece vocabulary trained here: the pipeline must work
with any seq2seq LM.
"""

import copy
import io
import json
import random

import pytest
import sentencepiece as spm
import torch
from transformers import (
    MarianConfig,
    MarianMTModel,
    MarianTokenizer,
    T5Config,
    T5ForConditionalGeneration,
    T5Tokenizer,
    pipeline,
)
from transformers.pipelines import PIPELINE_REGISTRY

from ea_hf import EAMarianConfig, EAMarianMTModel, EAT5Config, EAT5ForConditionalGeneration, pipeline_translation
from ea_hf.custom_pipelines import register_translation_pipeline, save_translation_pipeline
from ea_hf.pipeline_translation import TranslationPipeline

from ea_model_tester import run_without_ea_hf


pytestmark = [
    pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses"),
    pytest.mark.usefixtures("one_thread"),
]

WORDS = "the a cat dog house green small big runs sees eats old young red blue tree river city man woman bird".split()
TEXTS = ["the cat sees a dog", "a big green tree", "the old man runs to the river city", "red bird"]
PAD, EOS, UNK = 0, 1, 2
STD = 0.3


@pytest.fixture(scope="module")
def spm_files(tmp_path_factory):
    """A unigram SentencePiece model (<pad>=0, </s>=1, <unk>=2, as T5 wants) and its vocab.json, as Marian wants."""
    folder = tmp_path_factory.mktemp("spm")
    rng = random.Random(0)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(300)]
    names = list(pipeline_translation.LANGUAGE_NAMES.values())
    sentences += [f"translate {a} to {b}: {s}" for a in names for b in names for s in sentences[:4]]
    sentences += ["summarize: xx yy zz " + s for s in sentences[:20]]
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=proto,
        vocab_size=100,
        model_type="unigram",
        pad_id=PAD,
        eos_id=EOS,
        unk_id=UNK,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
        num_threads=1,
    )
    (folder / "spm.model").write_bytes(proto.getvalue())
    processor = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    pieces = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    (folder / "vocab.json").write_text(json.dumps({piece: i for i, (piece, _) in enumerate(pieces)}))
    return folder, pieces


def randomize(model, std=STD):
    """Larger random weight matrices than the init's (norms and biases kept), so that different inputs give different
    translations."""
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1 and param.requires_grad:  # not Marian's sinusoidal positions, which are not saved
                param.normal_(std=std)
    return model.eval()


@pytest.fixture(scope="module")
def marian(spm_files):
    folder, pieces = spm_files
    spm_path, vocab = str(folder / "spm.model"), str(folder / "vocab.json")
    tokenizer = MarianTokenizer(spm_path, spm_path, vocab, source_lang="en", target_lang="de", model_max_length=64)
    config = MarianConfig(
        vocab_size=len(pieces),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=37,
        decoder_ffn_dim=37,
        max_position_embeddings=64,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
        forced_eos_token_id=None,
    )
    return randomize(MarianMTModel(config)), tokenizer


@pytest.fixture(scope="module")
def t5(spm_files):
    _, pieces = spm_files
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    config = T5Config(
        vocab_size=len(pieces),
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
    )
    return randomize(T5ForConditionalGeneration(config)), tokenizer


@pytest.fixture(scope="module")
def ea_t5(t5):
    """EA-T5 with every chain on, the same size and tokenizer as the vanilla T5."""
    model, tokenizer = t5
    fields = {k: v for k, v in model.config.to_dict().items() if k not in ("model_type", "architectures")}
    return randomize(EAT5ForConditionalGeneration(EAT5Config(**fields, ea_alpha=0.5, ea_beta=0.5))), tokenizer


@pytest.fixture(scope="module")
def ea_marian(marian):
    """EA-Marian with every chain on, the same size and tokenizer as the vanilla Marian."""
    model, tokenizer = marian
    fields = {k: v for k, v in model.config.to_dict().items() if k not in ("model_type", "architectures")}
    return randomize(EAMarianMTModel(EAMarianConfig(**fields, ea_alpha=0.5, ea_beta=0.5))), tokenizer


@pytest.fixture(params=["marian", "t5", "ea_t5", "ea_marian"])
def model_and_tokenizer(request):
    return request.getfixturevalue(request.param)


def translation_pipeline(model_and_tokenizer, **kwargs):
    """A TranslationPipeline that leaves the model where it is (the default would move it to a GPU if there is one)."""
    return TranslationPipeline(*model_and_tokenizer, device=-1, **kwargs)


def manual_translations(model, tokenizer, texts, **generate_kwargs):
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        output_ids = model.generate(**inputs, **generate_kwargs)
    return tokenizer.batch_decode(output_ids, skip_special_tokens=True)


def test_output_format_for_single_and_batched_inputs(model_and_tokenizer):
    translator = translation_pipeline(model_and_tokenizer, max_new_tokens=4)
    single = translator(TEXTS[0])
    assert isinstance(single, list) and len(single) == 1
    assert list(single[0]) == ["translation_text"] and isinstance(single[0]["translation_text"], str)
    for batch_size in (1, 3):
        batched = translator(TEXTS, batch_size=batch_size)
        assert len(batched) == len(TEXTS)
        assert all(list(item) == ["translation_text"] for item in batched)
    assert translator(tuple(TEXTS[:2])) == translator(TEXTS[:2])
    several = translator(TEXTS[:2], num_beams=3, num_return_sequences=3)
    assert [len(item) for item in several] == [3, 3]
    assert all(isinstance(record["translation_text"], str) for item in several for record in item)
    assert len(translator(TEXTS[0], num_beams=2, num_return_sequences=2)) == 2


@pytest.mark.parametrize("max_new_tokens", [1, 3, 7])
def test_max_new_tokens_bounds_the_output(marian, max_new_tokens):
    translator = translation_pipeline(marian)
    outputs = translator(TEXTS, max_new_tokens=max_new_tokens, return_tensors=True, batch_size=2)
    lengths = [len(item["translation_token_ids"]) for item in outputs]
    assert max(lengths) == max_new_tokens + 1  # the decoder start token, then at most max_new_tokens
    texts = translator(TEXTS, max_new_tokens=max_new_tokens)
    ids = [item["translation_token_ids"] for item in outputs]
    assert [t["translation_text"] for t in texts] == marian[1].batch_decode(ids, skip_special_tokens=True)


def test_generation_parameters_pass_through(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    translator = translation_pipeline((model, tokenizer))
    greedy = [item["translation_text"] for item in translator(TEXTS, max_new_tokens=6)]
    beam = [item["translation_text"] for item in translator(TEXTS, max_new_tokens=6, num_beams=4)]
    assert all(isinstance(text, str) and text for text in greedy + beam)
    assert beam == [manual_translations(model, tokenizer, [t], max_new_tokens=6, num_beams=4)[0] for t in TEXTS]
    beams = translator(TEXTS[0], max_new_tokens=6, num_beams=4, num_return_sequences=4, return_tensors=True)
    assert len({tuple(item["translation_token_ids"].tolist()) for item in beams}) == 4  # four distinct hypotheses
    samples = []
    for _ in range(2):
        torch.manual_seed(3)
        samples.append(translator(TEXTS, max_new_tokens=6, do_sample=True, top_k=0))
    assert samples[0] == samples[1]
    torch.manual_seed(4)
    assert translator(TEXTS, max_new_tokens=6, do_sample=True, top_k=0) != samples[0]
    # init parameters apply to every call, call parameters win over them
    preset = translation_pipeline((model, tokenizer), max_new_tokens=2)
    assert preset(TEXTS, return_tensors=True)[0]["translation_token_ids"].shape[-1] == 3
    assert preset(TEXTS, return_tensors=True, max_new_tokens=5)[0]["translation_token_ids"].shape[-1] == 6


@pytest.mark.parametrize("batch_size", [1, 4])
def test_equals_manual_generate(model_and_tokenizer, batch_size):
    model, tokenizer = model_and_tokenizer
    translator = translation_pipeline((model, tokenizer))
    got = [item["translation_text"] for item in translator(TEXTS, batch_size=batch_size, max_new_tokens=8)]
    if batch_size == 1:
        expected = [manual_translations(model, tokenizer, [text], max_new_tokens=8)[0] for text in TEXTS]
    else:
        expected = manual_translations(model, tokenizer, TEXTS, max_new_tokens=8)
    assert got == expected
    assert len(set(got)) > 1  # the tiny model does look at its input


def test_t5_language_prefix(t5):
    model, tokenizer = t5
    translator = translation_pipeline((model, tokenizer))

    def fed(text, **kwargs):
        return translator.preprocess(text, **kwargs)["input_ids"][0].tolist()

    assert fed("the cat", src_lang="en", tgt_lang="de") == tokenizer("translate English to German: the cat").input_ids
    assert tokenizer.decode(fed("the cat", src_lang="fr", tgt_lang="ro"), skip_special_tokens=True) == (
        "translate French to Romanian: the cat"
    )
    assert tokenizer.decode(fed("the cat", src_lang="en", tgt_lang="es"), skip_special_tokens=True) == (
        "translate English to Spanish: the cat"
    )
    # unknown codes are used as given; an explicit prefix wins; no languages, no prefix
    assert fed("the cat", src_lang="xx", tgt_lang="de") == tokenizer("translate xx to German: the cat").input_ids
    assert fed("the cat", src_lang="en", tgt_lang="de", prefix="summarize: ") == (
        tokenizer("summarize: the cat").input_ids
    )
    assert fed("the cat") == tokenizer("the cat").input_ids
    with pytest.raises(ValueError, match="both `src_lang` and `tgt_lang`"):
        fed("the cat", src_lang="en")
    model.config.prefix = "summarize: "  # a config's own prefix is the default
    try:
        with_config_prefix = translation_pipeline(t5).preprocess("the cat")["input_ids"][0].tolist()
    finally:
        del model.config.prefix
    assert with_config_prefix == tokenizer("summarize: the cat").input_ids
    # the languages reach the model, given at call or at init
    prefixed = translator(["translate English to German: " + text for text in TEXTS], max_new_tokens=6)
    assert translator(TEXTS, src_lang="en", tgt_lang="de", max_new_tokens=6) == prefixed
    assert translation_pipeline((model, tokenizer), src_lang="en", tgt_lang="de")(TEXTS, max_new_tokens=6) == prefixed
    assert translator(TEXTS, max_new_tokens=6) != prefixed


def test_marian_languages_are_checked_not_prefixed(marian, spm_files):
    model, tokenizer = marian
    translator = translation_pipeline((model, tokenizer))
    plain = translator.preprocess(TEXTS[0])["input_ids"]
    for src, tgt in (("en", "de"), ("eng", "deu"), ("en", None), (None, "de")):
        assert torch.equal(translator.preprocess(TEXTS[0], src_lang=src, tgt_lang=tgt)["input_ids"], plain)
    assert translator(TEXTS, src_lang="en", tgt_lang="de", max_new_tokens=5) == translator(TEXTS, max_new_tokens=5)
    with pytest.raises(ValueError, match="fixed"):
        translator(TEXTS[0], src_lang="en", tgt_lang="fr")
    with pytest.raises(ValueError, match="fixed"):
        translator(TEXTS[0], src_lang="es", tgt_lang="de")

    # a multilingual Marian tokenizer picks its target language with a token
    folder, pieces = spm_files
    vocab = {piece: i for i, (piece, _) in enumerate(pieces)} | {">>fr<<": len(pieces), ">>es<<": len(pieces) + 1}
    (folder / "multi_vocab.json").write_text(json.dumps(vocab))
    spm_path = str(folder / "spm.model")
    multi = MarianTokenizer(spm_path, spm_path, str(folder / "multi_vocab.json"))
    multilingual_model = copy.deepcopy(model)
    multilingual_model.resize_token_embeddings(len(vocab))  # the two language tokens are in its vocabulary too
    multi_translator = translation_pipeline((multilingual_model, multi))
    fed = multi_translator.preprocess(TEXTS[0], tgt_lang="es")["input_ids"][0].tolist()
    assert fed == [vocab[">>es<<"]] + multi(TEXTS[0]).input_ids
    with pytest.raises(ValueError, match="not one of this checkpoint's targets"):
        multi_translator.preprocess(TEXTS[0], tgt_lang="de")


def test_truncation_to_the_tokenizer_max_length(marian, t5):
    model, tokenizer = marian  # model_max_length 64 = the model's max_position_embeddings
    translator = translation_pipeline((model, tokenizer))
    long_text = " ".join(WORDS * 10)
    assert len(tokenizer(long_text).input_ids) > 64
    fed = translator.preprocess(long_text)["input_ids"][0]
    assert len(fed) == 64 and fed[-1] == EOS
    assert len(translator.preprocess(long_text, truncation=False)["input_ids"][0]) > 64
    assert len(translator([long_text, TEXTS[0]], max_new_tokens=3, batch_size=2)) == 2  # runs, where 64+ would not

    model, tokenizer = t5  # no model_max_length: nothing to truncate to
    translator = translation_pipeline((model, tokenizer))
    assert len(translator.preprocess(long_text)["input_ids"][0]) == len(tokenizer(long_text).input_ids)
    with pytest.raises(ValueError, match="model_max_length"):
        translator.preprocess(long_text, truncation=True)


@pytest.mark.parametrize(
    "inputs, error",
    [
        ("", ValueError),
        ("   ", ValueError),
        ([], ValueError),
        ([TEXTS[0], ""], ValueError),
        ([TEXTS[0], 3], TypeError),
    ],
    ids=["empty-string", "blank-string", "empty-list", "empty-in-list", "not-a-string"],
)
def test_empty_input_is_a_clear_error(marian, inputs, error):
    translator = translation_pipeline(marian)
    with pytest.raises(error, match="empty|translates strings"):
        translator(inputs, max_new_tokens=2)


def test_tokenizer_that_does_not_match_the_model(t5):
    model, tokenizer = t5
    smaller = T5ForConditionalGeneration(T5Config(**{**model.config.to_dict(), "vocab_size": len(tokenizer) - 5}))
    with pytest.raises(ValueError, match="do not belong together"):
        TranslationPipeline(model=smaller, tokenizer=tokenizer, device=-1)


def test_transformers_pipeline_translation_after_registration(marian):
    register_translation_pipeline()
    assert "translation" in PIPELINE_REGISTRY.get_supported_tasks()
    translator = pipeline("translation", model=marian[0], tokenizer=marian[1], max_new_tokens=5, device=-1)
    assert type(translator) is TranslationPipeline and translator.task == "translation"
    assert translator(TEXTS) == translation_pipeline(marian, max_new_tokens=5)(TEXTS)


def test_transformers_pipeline_loads_a_plain_folder_after_registration(marian, tmp_path):
    """A folder saved without the pipeline's code (no `custom_pipelines`) gets the registered pipeline."""
    register_translation_pipeline()
    marian[0].save_pretrained(tmp_path)
    marian[1].save_pretrained(tmp_path)
    translator = pipeline("translation", model=str(tmp_path), device="cpu")
    assert type(translator) is TranslationPipeline
    assert translator(TEXTS, max_new_tokens=5) == translation_pipeline(marian)(TEXTS, max_new_tokens=5)


def test_saved_folder_loads_as_remote_code_without_ea_hf(marian, t5, ea_t5, ea_marian, tmp_path):
    """`save_translation_pipeline` (and `pipe.save_pretrained`) write a folder that `pipeline("translation",
    model=folder, trust_remote_code=True)` loads in a fresh interpreter that cannot import ea_hf, with the same
    translations; the remote copy can save such a folder again; without trust_remote_code it refuses."""
    calls = {
        "marian": ({"max_new_tokens": 6}, {"max_new_tokens": 6, "num_beams": 4, "src_lang": "en", "tgt_lang": "de"}),
        "t5": ({"max_new_tokens": 6}, {"max_new_tokens": 6, "num_beams": 4, "src_lang": "en", "tgt_lang": "de"}),
        "ea_t5": ({"max_new_tokens": 6}, {"max_new_tokens": 6, "num_beams": 4, "src_lang": "en", "tgt_lang": "de"}),
        "ea_marian": ({"max_new_tokens": 6}, {"max_new_tokens": 6, "num_beams": 4}),
    }
    expected = {}
    for name, (model, tokenizer) in {"marian": marian, "t5": t5, "ea_t5": ea_t5, "ea_marian": ea_marian}.items():
        folder = save_translation_pipeline(model, tokenizer, tmp_path / name)
        assert "custom_pipelines" not in model.config.to_dict()  # the entry was written for the save only
        config = json.loads((folder / "config.json").read_text())
        assert config["custom_pipelines"] == {
            "translation": {
                "impl": "pipeline_translation.TranslationPipeline",
                "pt": ["AutoModelForSeq2SeqLM"],
                "type": "text",
            }
        }
        code = (folder / "pipeline_translation.py").read_text()
        assert "import ea_hf" not in code and "from ea_hf" not in code and "from ." not in code
        translator = translation_pipeline((model, tokenizer))
        expected[name] = [translator(TEXTS, batch_size=2, **kwargs) for kwargs in calls[name]]
    translation_pipeline(t5).save_pretrained(tmp_path / "t5_via_save_pretrained")
    expected["t5_via_save_pretrained"] = expected["t5"]
    calls["t5_via_save_pretrained"] = calls["t5"]

    run_without_ea_hf(
        f"""
        import json
        import torch
        from transformers import pipeline
        torch.set_num_threads(1)
        root, texts, calls = {str(tmp_path)!r}, {TEXTS!r}, {calls!r}
        results = {{}}
        for name, kwargs_list in calls.items():
            translator = pipeline("translation", model=root + "/" + name, trust_remote_code=True, device="cpu")
            assert type(translator).__name__ == "TranslationPipeline", type(translator)
            assert type(translator).__module__.startswith("transformers_modules"), type(translator).__module__
            if name.startswith("ea_"):  # the EA model itself comes as remote code
                assert type(translator.model).__name__.startswith("EA"), type(translator.model)
                assert type(translator.model).__module__.startswith("transformers_modules")
            results[name] = [translator(texts, batch_size=2, **kwargs) for kwargs in kwargs_list]
        # the remote copy saves itself again: a folder saved where ea_hf is not installed loads too
        translator.save_pretrained(root + "/resaved")
        resaved = pipeline("translation", model=root + "/resaved", trust_remote_code=True, device="cpu")
        results["resaved"] = [resaved(texts, batch_size=2, **kwargs) for kwargs in kwargs_list]
        try:
            pipeline("translation", model=root + "/t5")
        except ValueError as error:
            assert "trust_remote_code" in str(error), error
        else:
            raise AssertionError("loaded a custom pipeline without trust_remote_code")
        with open(root + "/remote.json", "w") as f:
            json.dump(results, f)
        """,
        tmp_path,
    )
    expected["resaved"] = expected["t5_via_save_pretrained"]  # the last folder loaded, saved again
    remote = json.loads((tmp_path / "remote.json").read_text())
    assert remote == expected


@pytest.fixture(scope="module")
def short_ea_marian(marian):
    """EA-Marian whose decoder has only 8 positions (the tokenizer's model_max_length stays 64)."""
    model, tokenizer = marian
    fields = {k: v for k, v in model.config.to_dict().items() if k not in ("model_type", "architectures")}
    config = EAMarianConfig(**{**fields, "max_position_embeddings": 8}, ea_alpha=0.5, ea_beta=0.5)
    return randomize(EAMarianMTModel(config)), tokenizer


def test_generation_length_is_capped_by_the_decoder_positions(short_ea_marian, t5):
    """The default length (256 new tokens) is cut to the decoder's 8 positions; asking for more is refused before
    generating; a T5 (relative positions) is not capped."""
    never_stop = {"suppress_tokens": [EOS], "return_tensors": True}
    translator = translation_pipeline(short_ea_marian)
    assert len(translator("red bird", **never_stop)[0]["translation_token_ids"]) == 8 + 1  # start token + 8
    assert len(translator("red bird", max_new_tokens=8, **never_stop)[0]["translation_token_ids"]) == 9
    assert len(translator("red bird", max_new_tokens=3, **never_stop)[0]["translation_token_ids"]) == 4
    for kwargs in ({"max_new_tokens": 9}, {"max_length": 10}):
        with pytest.raises(ValueError, match="decoder of this model has 8 positions.*max_new_tokens=8"):
            translator("red bird", **kwargs)
    with pytest.raises(ValueError, match="asks for 9 new tokens"):
        translation_pipeline(short_ea_marian, max_new_tokens=9)("red bird")
    model = copy.deepcopy(short_ea_marian[0])
    model.generation_config.max_new_tokens = 50  # the checkpoint's own setting is capped too
    capped = translation_pipeline((model, short_ea_marian[1]))("red bird", **never_stop)
    assert len(capped[0]["translation_token_ids"]) == 9
    long_t5 = translation_pipeline(t5)("red bird", max_new_tokens=70, **never_stop)
    assert len(long_t5[0]["translation_token_ids"]) == 71
