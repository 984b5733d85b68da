"""`scripts/examples/train_tokenizers.py`: tiny Marian and T5 SentencePiece tokenizers trained on a generated EN-ES
corpus."""

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer, MarianConfig, MarianTokenizer, T5Config, T5Tokenizer, T5TokenizerFast

from scripts.examples import train_tokenizers
from scripts.examples.train_tokenizers import main, read_translation_pairs, train_marian_tokenizer, train_t5_tokenizer


pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

# A parallel lexicon: each English word with its Spanish translation, so the pairs are (crude) translations.
NOUNS = [("cat", "gato"), ("dog", "perro"), ("house", "casa"), ("river", "río"), ("child", "niño"),
         ("woman", "señora"), ("bird", "pájaro"), ("tree", "árbol"), ("book", "libro"), ("city", "ciudad"),
         ("song", "canción"), ("teacher", "maestro"), ("friend", "amigo"), ("garden", "jardín")]  # fmt: skip
ADJECTIVES = [("big", "grande"), ("small", "pequeño"), ("red", "rojo"), ("green", "verde"), ("old", "viejo"),
              ("new", "nuevo"), ("happy", "feliz"), ("quiet", "tranquilo"), ("fast", "rápido")]  # fmt: skip
VERBS = [("sees", "ve"), ("eats", "come"), ("finds", "encuentra"), ("likes", "quiere"), ("follows", "sigue"),
         ("hears", "oye"), ("draws", "dibuja"), ("reads", "lee")]  # fmt: skip


def make_pair(rng: random.Random) -> tuple[str, str]:
    (n1, m1), (n2, m2) = rng.sample(NOUNS, 2)
    (a1, b1), (v1, w1) = rng.choice(ADJECTIVES), rng.choice(VERBS)
    count = rng.randint(2, 12)
    template = rng.randrange(4)
    if template == 0:
        return f"The {a1} {n1} {v1} the {n2}.", f"El {m1} {b1} {w1} el {m2}."
    if template == 1:
        return f"Does the {n1} see the {a1} {n2}?", f"¿El {m1} ve el {m2} {b1}?"
    if template == 2:
        return f"{count} {n1}s and the {n2}, too!", f"¡{count} {m1}s y el {m2}, también!"
    return f"My friend {v1} a {a1} {n1} near the {n2}.", f"Mi amigo {w1} un {m1} {b1} cerca del {m2}."


def make_corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    pairs = [make_pair(rng) for _ in range(n)]
    return [en for en, _ in pairs], [es for _, es in pairs]


TRAIN_EN, TRAIN_ES = make_corpus(400, seed=0)
TEST_EN, TEST_ES = make_corpus(40, seed=1)  # mostly unseen combinations of the same words and characters
TEST_EN, TEST_ES = TEST_EN + ["The quiet teacher reads the book."], TEST_ES + ["¿El maestro lee el libro tranquilo?"]
VOCAB_SIZE = 300


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("marian")
    assert train_marian_tokenizer(TRAIN_EN, TRAIN_ES, out, VOCAB_SIZE, source_lang="en", target_lang="es") == str(out)
    return out


@pytest.fixture(scope="module")
def marian(marian_dir):
    return MarianTokenizer.from_pretrained(marian_dir)


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("t5")
    assert train_t5_tokenizer(TRAIN_EN + TRAIN_ES, out, VOCAB_SIZE, extra_ids=10) == str(out)
    return out


@pytest.fixture(scope="module")
def t5(t5_dir):
    return T5Tokenizer.from_pretrained(t5_dir)


def spm_pieces(path) -> list[str]:
    processor = spm.SentencePieceProcessor(model_file=str(path))
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def test_marian_folder_follows_the_opus_mt_id_layout(marian_dir, marian):
    assert {p.name for p in marian_dir.iterdir()} == {
        "source.spm",
        "target.spm",
        "vocab.json",
        "tokenizer_config.json",
    }
    vocab = json.loads((marian_dir / "vocab.json").read_text(encoding="utf-8"))
    assert sorted(vocab.values()) == list(range(len(vocab)))  # contiguous ids, no piece twice
    assert (vocab["</s>"], vocab["<unk>"], vocab["<pad>"]) == (0, 1, len(vocab) - 1)
    source, target = spm_pieces(marian_dir / "source.spm"), spm_pieces(marian_dir / "target.spm")
    assert source != target and "▁señora" not in source and "▁señora" in target
    assert set(vocab) == set(source) | set(target) | {"<pad>"}  # the joint vocabulary is the union
    # MarianConfig defaults (opus-mt): eos = forced eos = 0, pad = decoder start = last id.
    defaults = MarianConfig()
    assert (defaults.eos_token_id, defaults.forced_eos_token_id) == (0, 0)
    assert defaults.pad_token_id == defaults.decoder_start_token_id == defaults.vocab_size - 1
    assert (marian.eos_token_id, marian.unk_token_id, marian.pad_token_id) == (0, 1, len(vocab) - 1)
    assert len(marian) == marian.vocab_size == len(vocab)
    assert (marian.source_lang, marian.target_lang, marian.model_max_length) == ("en", "es", 512)


def test_marian_round_trip_on_both_sides(marian_dir, marian):
    source = spm.SentencePieceProcessor(model_file=str(marian_dir / "source.spm"))
    target = spm.SentencePieceProcessor(model_file=str(marian_dir / "target.spm"))
    for en, es in zip(TEST_EN, TEST_ES):
        for ids, text, processor in (
            (marian(en).input_ids, en, source),
            (marian(text_target=es).input_ids, es, target),
        ):
            assert ids[-1] == marian.eos_token_id and ids.count(marian.eos_token_id) == 1
            assert all(0 <= i < len(marian) for i in ids) and marian.unk_token_id not in ids
            assert marian.convert_ids_to_tokens(ids[:-1]) == processor.encode(text, out_type=str)  # the side's spm
            assert marian.decode(ids, skip_special_tokens=True) == text
    # the same Spanish word is cut differently by the English model than by the Spanish one
    assert marian("señora").input_ids != marian(text_target="señora").input_ids


def test_marian_batches_pad_with_the_last_id_and_map_unseen_characters_to_unk(marian):
    batch = marian(TEST_EN[:4], text_target=TEST_ES[:4], padding=True)
    unpadded = {
        "input_ids": [marian(text).input_ids for text in TEST_EN[:4]],
        "labels": [marian(text_target=text).input_ids for text in TEST_ES[:4]],
    }
    for key, sequences in unpadded.items():
        assert len({len(ids) for ids in sequences}) > 1  # the batch really needs padding
        for ids, real in zip(batch[key], sequences):
            assert ids == real + [marian.pad_token_id] * (len(ids) - len(real))
    assert sum(map(sum, batch["attention_mask"])) == sum(len(marian(text).input_ids) for text in TEST_EN[:4])
    assert marian("The cat sees the Zebra.").input_ids.count(marian.unk_token_id) == 1  # "Z" is in no sentence
    assert type(AutoTokenizer.from_pretrained(marian.name_or_path)) is MarianTokenizer


def test_t5_folder_has_t5_ids_and_sentinels(t5_dir, t5):
    assert {p.name for p in t5_dir.iterdir()} == {"spiece.model", "tokenizer.json", "tokenizer_config.json"}
    pieces = spm_pieces(t5_dir / "spiece.model")
    assert pieces[:3] == ["<pad>", "</s>", "<unk>"] and "<s>" not in pieces
    defaults = T5Config()
    # T5 starts decoding with pad. transformers 5.24's T5Config() has no decoder_start_token_id attribute at all:
    # a model built from scratch needs T5Config(decoder_start_token_id=0), as the Hub's T5 configs set it.
    assert t5.pad_token_id == defaults.pad_token_id == 0
    assert t5.eos_token_id == defaults.eos_token_id == 1 and t5.unk_token_id == 2
    assert len(t5) == len(pieces) + 10 and len(pieces) <= VOCAB_SIZE
    sentinels = [f"<extra_id_{i}>" for i in range(10)]
    assert t5.convert_tokens_to_ids(sentinels) == list(range(len(t5) - 1, len(pieces) - 1, -1))  # <extra_id_0> last
    assert set(sentinels) <= set(t5.all_special_tokens)
    masked = t5("El gato <extra_id_0> el perro <extra_id_1>.").input_ids
    assert masked.count(len(t5) - 1) == 1 and masked.count(len(t5) - 2) == 1  # never split into pieces
    assert t5.decode(masked, skip_special_tokens=True).split() == ["El", "gato", "el", "perro", "."]
    assert T5TokenizerFast is T5Tokenizer  # transformers 5: one tokenizers-backed class
    auto = AutoTokenizer.from_pretrained(t5_dir)
    assert type(auto) is T5Tokenizer and auto(TEST_ES[0]).input_ids == t5(TEST_ES[0]).input_ids


def test_t5_round_trip_matches_sentencepiece(t5_dir, t5):
    processor = spm.SentencePieceProcessor(model_file=str(t5_dir / "spiece.model"))
    for text in TEST_EN + TEST_ES:
        ids = t5(text).input_ids
        assert ids == processor.encode(text) + [t5.eos_token_id]  # tokenizer.json == spiece.model
        assert all(0 <= i < len(t5) for i in ids) and t5.unk_token_id not in ids
        assert t5.decode(ids, skip_special_tokens=True) == text
    assert t5("The Zebra.").input_ids.count(t5.unk_token_id) == 1
    padded = t5(["a", TEST_EN[0]], padding=True)
    assert padded["input_ids"][0][-1] == t5.pad_token_id and padded["attention_mask"][0][-1] == 0


def test_t5_folder_loads_from_spiece_model_alone(t5_dir, t5, tmp_path):
    """Without tokenizer.json, transformers converts spiece.model again (needs protobuf) and must agree."""
    shutil.copy(t5_dir / "spiece.model", tmp_path)
    shutil.copy(t5_dir / "tokenizer_config.json", tmp_path)
    again = T5Tokenizer.from_pretrained(tmp_path)
    assert len(again) == len(t5)
    assert all(again(text).input_ids == t5(text).input_ids for text in TEST_EN + TEST_ES + ["<extra_id_3> Zebra"])


def test_training_is_deterministic(marian_dir, t5_dir, tmp_path):
    train_marian_tokenizer(TRAIN_EN, TRAIN_ES, tmp_path / "m", VOCAB_SIZE, source_lang="en", target_lang="es")
    train_t5_tokenizer(TRAIN_EN + TRAIN_ES, tmp_path / "t", VOCAB_SIZE, extra_ids=10)
    for name in ("source.spm", "target.spm", "vocab.json"):
        assert (tmp_path / "m" / name).read_bytes() == (marian_dir / name).read_bytes(), name
    for name in ("spiece.model", "tokenizer.json"):
        assert (tmp_path / "t" / name).read_bytes() == (t5_dir / name).read_bytes(), name


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_cli_end_to_end_on_json_lines(tmp_path):
    data = write_jsonl(
        tmp_path / "train.jsonl", [{"translation": {"en": e, "es": s}} for e, s in zip(TRAIN_EN, TRAIN_ES)]
    )
    script = train_tokenizers.__file__
    common = ["--train_file", str(data), "--vocab_size", str(VOCAB_SIZE)]
    out = tmp_path / "marian"
    marian_args = ["marian", *common, "--source_lang", "en", "--target_lang", "es", "--output_dir", str(out)]
    result = subprocess.run([sys.executable, script, *marian_args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    tokenizer = AutoTokenizer.from_pretrained(out)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["pad_token_id"] == tokenizer.pad_token_id == len(tokenizer) - 1 == summary["vocab_size"] - 1
    assert summary["eos_token_id"] == tokenizer.eos_token_id == 0
    assert tokenizer.decode(tokenizer(text_target=TEST_ES[0]).input_ids, skip_special_tokens=True) == TEST_ES[0]

    out = tmp_path / "t5"
    result = subprocess.run(
        [sys.executable, script, "t5", *common, "--extra_ids", "5", "--output_dir", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert json.loads(result.stdout.strip().splitlines()[-1])["vocab_size"] == len(tokenizer)
    assert tokenizer.convert_tokens_to_ids("<extra_id_0>") == len(tokenizer) - 1
    assert all(tokenizer.decode(tokenizer(t).input_ids, skip_special_tokens=True) == t for t in TEST_EN + TEST_ES)

    result = subprocess.run([sys.executable, script, *marian_args], capture_output=True, text=True)
    assert result.returncode == 2 and "not empty" in result.stderr  # never writes into a used folder silently


def test_cli_plain_text_for_t5(tmp_path, capsys):
    data = tmp_path / "train.txt"
    data.write_text("\n".join(TRAIN_ES) + "\n\n", encoding="utf-8")
    main(["t5", "--train_file", str(data), "--vocab_size", "200", "--output_dir", str(tmp_path / "t5")])
    tokenizer = T5Tokenizer.from_pretrained(tmp_path / "t5")
    assert json.loads(capsys.readouterr().out)["vocab_size"] == len(tokenizer) > 100
    assert tokenizer.decode(tokenizer(TEST_ES[1]).input_ids, skip_special_tokens=True) == TEST_ES[1]
    assert "▁señora" in tokenizer.get_vocab() and "▁teacher" not in tokenizer.get_vocab()  # Spanish only


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"translation": {"en": "a cat", "es": "un gato"}}\n{"translation": {"en": "a dog"}}\n', "line 2: no 'es'"),
        ("", "has no records"),
        ("\n\n", "has no records"),
        ('{"translation": {"en": "a cat", "es": "un gato"}}\nnot json\n', "line 2: not JSON"),
        ('{"en": "a cat", "es": "un gato"}\n', "line 1: expected"),
        ('{"translation": {"en": "a cat", "es": 3}}\n', "'es' text is not a string"),
    ],
    ids=["missing-language", "empty", "blank-lines", "not-json", "no-translation-key", "not-a-string"],
)
def test_cli_rejects_bad_json_lines(tmp_path, capsys, content, message):
    data = tmp_path / "bad.jsonl"
    data.write_text(content, encoding="utf-8")
    argv = ["--train_file", str(data), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main(["marian", *argv, "--source_lang", "en", "--target_lang", "es"])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(ValueError, match=message):
        read_translation_pairs(data, "en", "es")
    if message == "line 2: no 'es'":  # T5 on one language of the same file: only the first line is checked ...
        with pytest.raises(SystemExit) as exit_info:
            main(["t5", *argv, "--languages", "es"])
        assert exit_info.value.code == 2 and "line 2: no 'es'" in capsys.readouterr().err
        assert train_tokenizers.read_texts(data, ["en"]) == ["a cat", "a dog"]  # ... and every line has English
    assert not (tmp_path / "out").exists()


def test_cli_subprocess_reports_bad_input_clearly(tmp_path):
    """The error is one line on stderr, not a traceback."""
    data = write_jsonl(
        tmp_path / "bad.jsonl", [{"translation": {"en": "a cat", "es": "un gato"}}, {"translation": {}}]
    )
    script = train_tokenizers.__file__
    argv = ["marian", "--train_file", str(data), "--source_lang", "en", "--target_lang", "es", "--output_dir", "x"]
    result = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "line 2: no 'en' text" in result.stderr and "Traceback" not in result.stderr
    argv[2] = str(tmp_path / "missing.jsonl")
    result = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "no such file" in result.stderr and "Traceback" not in result.stderr


def test_functions_reject_empty_or_wrong_input(tmp_path):
    with pytest.raises(ValueError, match="source_texts: no non-empty text"):
        train_marian_tokenizer([], ["un gato"], tmp_path / "m")
    with pytest.raises(ValueError, match="target_texts: no non-empty text"):
        train_marian_tokenizer(["a cat"], ["", "  \n"], tmp_path / "m")
    with pytest.raises(TypeError, match="not a single str"):
        train_t5_tokenizer("a cat", tmp_path / "t")
    with pytest.raises(TypeError, match="item 1 is a int"):
        train_t5_tokenizer(["a cat", 3], tmp_path / "t")
    with pytest.raises(ValueError, match="SentencePiece training failed"):  # fewer pieces than characters
        train_t5_tokenizer(TRAIN_EN, tmp_path / "t", vocab_size=12)
    assert not (tmp_path / "m").exists() and not (tmp_path / "t").exists()
