#!/usr/bin/env python
"""Train tokenizers (SentencePiece for Marian or T5, byte-level BPE for causal LMs) on local text, offline.

    python scripts/examples/train_tokenizers.py marian --train_file data.jsonl --source_lang en --target_lang es \\
        --vocab_size 8000 --output_dir tok-marian-en-es
    python scripts/examples/train_tokenizers.py t5 --train_file data.jsonl --vocab_size 8000 --output_dir tok-t5
    python scripts/examples/train_tokenizers.py clm --train_file data.jsonl --languages en --vocab_size 8000 \\
        --output_dir tok-clm-en

`--train_file` is either JSON lines in the project's translation format, one `{"translation": {"en": ..., "es": ...}}`
record a line (a `.json` or `.jsonl` name), or plain text with one sentence a line (any other name). Marian needs both
languages in every record; T5 trains one model on every text of every record (or on `--languages` only).

The Marian folder (`source.spm`, `target.spm`, `vocab.json`, `tokenizer_config.json`) loads with
`MarianTokenizer.from_pretrained` and `AutoTokenizer.from_pretrained`. Its joint `vocab.json` follows the opus-mt
convention that `MarianConfig` defaults assume: `</s>` = 0 (eos, forced eos), `<unk>` = 1, the union of the pieces of
both SentencePiece models, and `<pad>` = the last id (pad and decoder start). `--vocab_size` is per side, so the joint
vocabulary can be up to twice as big (opus-mt: 2 x 32k pieces, 58,101 ids).

The T5 folder (`spiece.model`, `tokenizer.json`, `tokenizer_config.json`) loads with `T5Tokenizer.from_pretrained` and
`AutoTokenizer.from_pretrained` (in transformers 5 `T5Tokenizer` is the fast, `tokenizers`-backed class and
`T5TokenizerFast` is an alias of it) with T5's ids: `<pad>` = 0 (pad and decoder start), `</s>` = 1, `<unk>` = 2, then
the pieces, then the sentinels `<extra_id_{extra_ids - 1}>` ... `<extra_id_0>` (so `<extra_id_0>` is the last id).
`--vocab_size` counts the SentencePiece pieces only; the tokenizer has `extra_ids` more ids. T5 starts decoding with
`<pad>`, but transformers 5.24's `T5Config()` has no `decoder_start_token_id` (training with `labels` then fails
with an AttributeError): build from-scratch models with `T5Config(decoder_start_token_id=0, ...)`, as the Hub's T5
configs do.

The causal-LM folder (`tokenizer.json`, `tokenizer_config.json`) loads with `AutoTokenizer.from_pretrained`: a
byte-level BPE (any text encodes, nothing is unknown) with `<pad>` = 0, `<s>` = 1 (bos, put before every text) and
`</s>` = 2 (eos), the ids that `EALlamaConfig(pad_token_id=0, bos_token_id=1, eos_token_id=2)` takes.

`--vocab_size` is an upper bound (`hard_vocab_limit=False`; the BPE stops where no pair repeats): a small corpus
gives a smaller vocabulary. Training is single-threaded with a fixed seed, so the same text always gives the same
files.
"""

import argparse
import io
import json
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm


MARIAN_EOS, MARIAN_UNK, MARIAN_PAD = "</s>", "<unk>", "<pad>"
T5_PAD, T5_EOS, T5_UNK = "<pad>", "</s>", "<unk>"
CLM_PAD, CLM_BOS, CLM_EOS = "<pad>", "<s>", "</s>"
MODEL_MAX_LENGTH = 512  # what the opus-mt and T5 checkpoints on the Hub declare
JSON_SUFFIXES = {".json", ".jsonl"}


def _clean_texts(texts: Iterable[str], what: str) -> list[str]:
    """Non-blank texts (one SentencePiece sentence each: line breaks become spaces); a clear error for none."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{what}: expected an iterable of strings, not a single {type(texts).__name__}")
    cleaned = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}: item {i} is a {type(text).__name__}, not a str")
        text = " ".join(text.splitlines()).strip()
        if text:
            cleaned.append(text)
    if not cleaned:
        raise ValueError(f"{what}: no non-empty text to train on")
    return cleaned


def _train_sentencepiece(texts: list[str], vocab_size: int, seed: int, **special_ids) -> bytes:
    """A serialized unigram SentencePiece model; deterministic (one thread, fixed seed, no file path in the proto)."""
    if vocab_size < 10:
        raise ValueError(f"vocab_size must be at least 10, got {vocab_size}")
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=model,
            vocab_size=vocab_size,
            model_type="unigram",
            character_coverage=1.0,
            hard_vocab_limit=False,
            num_threads=1,
            minloglevel=2,
            **special_ids,
        )
    except RuntimeError as error:  # e.g. a vocab_size smaller than the number of distinct characters
        raise ValueError(f"SentencePiece training failed: {error}") from error
    return model.getvalue()


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def train_marian_tokenizer(
    source_texts: Iterable[str],
    target_texts: Iterable[str],
    output_dir,
    vocab_size: int = 8000,
    source_lang: str | None = None,
    target_lang: str | None = None,
    seed: int = 0,
) -> str:
    """Train one unigram model per side and write a folder that `MarianTokenizer.from_pretrained` loads.

    `vocab.json` holds `</s>` = 0, `<unk>` = 1, the source pieces, then the target pieces not already there, and
    `<pad>` last, the layout `MarianConfig` defaults expect (eos 0, pad = decoder start = vocab_size - 1). Returns
    the folder."""
    sources = _clean_texts(source_texts, "source_texts")
    targets = _clean_texts(target_texts, "target_texts")
    # The pieces' SentencePiece ids are never used (vocab.json maps pieces to ids), but keep </s> and <unk>
    # as the only control pieces so that they are not pieces of their own.
    special_ids = dict(unk_id=0, eos_id=1, bos_id=-1, pad_id=-1, unk_piece=MARIAN_UNK, eos_piece=MARIAN_EOS)
    models = [_train_sentencepiece(texts, vocab_size, seed, **special_ids) for texts in (sources, targets)]

    vocab = {MARIAN_EOS: 0, MARIAN_UNK: 1}
    for model in models:
        processor = spm.SentencePieceProcessor(model_proto=model)
        for i in range(processor.get_piece_size()):
            if processor.is_control(i) or processor.is_unknown(i):
                continue
            vocab.setdefault(processor.id_to_piece(i), len(vocab))
    if MARIAN_PAD in vocab:
        raise ValueError(f"the text contains {MARIAN_PAD!r}, which SentencePiece learned as a piece")
    vocab[MARIAN_PAD] = len(vocab)

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    for name, model in zip(("source.spm", "target.spm"), models):
        (output / name).write_bytes(model)
    _write_json(output / "vocab.json", vocab)
    config = {
        "tokenizer_class": "MarianTokenizer",
        "source_lang": source_lang,
        "target_lang": target_lang,
        "separate_vocabs": False,
        "eos_token": MARIAN_EOS,
        "unk_token": MARIAN_UNK,
        "pad_token": MARIAN_PAD,
        "model_max_length": MODEL_MAX_LENGTH,
    }
    _write_json(output / "tokenizer_config.json", config)
    return str(output)


def train_t5_tokenizer(
    texts: Iterable[str], output_dir, vocab_size: int = 8000, extra_ids: int = 100, seed: int = 0
) -> str:
    """Train a unigram model with T5's ids (`<pad>` 0, `</s>` 1, `<unk>` 2, no `<s>`) and write a folder that
    `T5Tokenizer.from_pretrained` and `AutoTokenizer.from_pretrained` load: `spiece.model`, `tokenizer_config.json`
    and the converted `tokenizer.json` (so loading needs neither `sentencepiece` nor `protobuf`). Returns the folder.
    """
    from transformers import T5Tokenizer
    from transformers.utils import is_protobuf_available

    if not is_protobuf_available():  # transformers reads spiece.model's pieces and normaliser through protobuf
        raise ImportError("Converting spiece.model into tokenizer.json needs protobuf: pip install protobuf")
    if extra_ids < 0:
        raise ValueError(f"extra_ids must be >= 0, got {extra_ids}")
    special_ids = dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece=T5_PAD, eos_piece=T5_EOS, unk_piece=T5_UNK)
    model = _train_sentencepiece(_clean_texts(texts, "texts"), vocab_size, seed, **special_ids)
    pieces = spm.SentencePieceProcessor(model_proto=model)
    clashes = [pieces.id_to_piece(i) for i in range(pieces.get_piece_size()) if "<extra_id_" in pieces.id_to_piece(i)]
    if clashes:
        raise ValueError(f"the text contains sentinel-like pieces that SentencePiece learned: {clashes[:5]}")

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "tokenizer.json").unlink(missing_ok=True)  # a stale one would be loaded instead of spiece.model
    (output / "spiece.model").write_bytes(model)
    config = {
        "tokenizer_class": "T5Tokenizer",
        "eos_token": T5_EOS,
        "unk_token": T5_UNK,
        "pad_token": T5_PAD,
        "extra_ids": extra_ids,
        "model_max_length": MODEL_MAX_LENGTH,
    }
    _write_json(output / "tokenizer_config.json", config)
    tokenizer = T5Tokenizer.from_pretrained(output)  # converts spiece.model (T5Tokenizer(vocab_file=...) ignores it)
    if len(tokenizer) != pieces.get_piece_size() + extra_ids or tokenizer.unk_token_id != 2:
        raise RuntimeError(f"unexpected T5 conversion: {len(tokenizer)} ids for {pieces.get_piece_size()} pieces")
    tokenizer.backend_tokenizer.save(str(output / "tokenizer.json"))
    return str(output)


def train_clm_tokenizer(texts: Iterable[str], output_dir, vocab_size: int = 8000) -> str:
    """Train a byte-level BPE with `<pad>` 0, `<s>` 1 (prepended to every text) and `</s>` 2, and write a folder that
    `AutoTokenizer.from_pretrained` loads. Deterministic: the same texts give the same files. Returns the folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = [CLM_PAD, CLM_BOS, CLM_EOS]
    if vocab_size < 256 + len(special):
        raise ValueError(f"vocab_size must be at least {256 + len(special)} (the 256 bytes and {special})")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_clean_texts(texts, "texts"), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLM_BOS} $A", pair=f"{CLM_BOS} $A {CLM_BOS} $B", special_tokens=[(CLM_BOS, 1)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=CLM_PAD,
        bos_token=CLM_BOS,
        eos_token=CLM_EOS,
        model_max_length=MODEL_MAX_LENGTH,
    )
    wrapped.save_pretrained(output_dir)
    return str(output_dir)


def read_translation_pairs(path, source_lang: str, target_lang: str) -> tuple[list[str], list[str]]:
    """Source and target texts of a JSON-lines file of `{"translation": {lang: text, ...}}` records."""
    records = _read_translation_records(path)
    sources, targets = [], []
    for line_number, translation in records:
        for lang, texts in ((source_lang, sources), (target_lang, targets)):
            if lang not in translation:
                raise ValueError(f"{path}, line {line_number}: no {lang!r} text (languages: {sorted(translation)})")
            texts.append(translation[lang])
    return sources, targets


def read_texts(path, languages: list[str] | None = None) -> list[str]:
    """Every text of a plain-text file (one a line) or of a JSON-lines translation file (all languages of each record,
    or `languages` only, each required)."""
    path = Path(path)
    if path.suffix.lower() not in JSON_SUFFIXES:
        texts = [line.strip() for line in _read_lines(path)]
        texts = [text for text in texts if text]
        if not texts:
            raise ValueError(f"{path} has no text")
        return texts
    texts = []
    for line_number, translation in _read_translation_records(path):
        for lang in languages or translation:
            if lang not in translation:
                raise ValueError(f"{path}, line {line_number}: no {lang!r} text (languages: {sorted(translation)})")
            texts.append(translation[lang])
    return texts


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return path.read_text(encoding="utf-8").splitlines()


def _read_translation_records(path) -> list[tuple[int, dict]]:
    path = Path(path)
    records = []
    for line_number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {line_number}: not JSON ({error})") from error
        translation = record.get("translation") if isinstance(record, dict) else None
        if not isinstance(translation, dict):
            raise ValueError(f'{path}, line {line_number}: expected {{"translation": {{lang: text, ...}}}}')
        for lang, text in translation.items():
            if not isinstance(text, str):
                raise ValueError(f"{path}, line {line_number}: the {lang!r} text is not a string")
        records.append((line_number, translation))
    if not records:
        raise ValueError(f"{path} has no records")
    return records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="kind", required=True)
    marian = subparsers.add_parser("marian", help="source.spm + target.spm + joint vocab.json (MarianTokenizer)")
    marian.add_argument("--source_lang", required=True, help="key of the source text in each translation record")
    marian.add_argument("--target_lang", required=True, help="key of the target text in each translation record")
    t5 = subparsers.add_parser("t5", help="spiece.model + tokenizer.json (T5Tokenizer)")
    t5.add_argument("--languages", nargs="+", help="JSON lines only: train on these languages (default: all)")
    t5.add_argument("--extra_ids", type=int, default=100, help="number of sentinels <extra_id_N>")
    clm = subparsers.add_parser("clm", help="byte-level BPE tokenizer.json for causal LMs (EA-Llama, EA-Qwen2)")
    clm.add_argument("--languages", nargs="+", help="JSON lines only: train on these languages (default: all)")
    for sub in (marian, t5, clm):
        sub.add_argument("--train_file", required=True, help="JSON lines (.json/.jsonl) or plain text, one a line")
        sub.add_argument("--output_dir", required=True, help="folder for the tokenizer files")
        sub.add_argument("--vocab_size", type=int, default=8000, help="most pieces (SentencePiece: per side, Marian)")
        sub.add_argument("--seed", type=int, default=0, help="SentencePiece's seed (the BPE is deterministic)")
        sub.add_argument("--overwrite", action="store_true", help="write into a non-empty output_dir")
    args = parser.parse_args(argv)

    output = Path(args.output_dir)
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and not args.overwrite)):
        parser.error(f"output_dir {output} exists and is not empty (pass --overwrite to write into it)")
    try:
        if args.kind == "marian":
            if args.source_lang == args.target_lang:
                parser.error("--source_lang and --target_lang must differ")
            sources, targets = read_translation_pairs(args.train_file, args.source_lang, args.target_lang)
            folder = train_marian_tokenizer(
                sources, targets, output, args.vocab_size, args.source_lang, args.target_lang, seed=args.seed
            )
            vocab = json.loads((output / "vocab.json").read_text(encoding="utf-8"))
            pad = vocab[MARIAN_PAD]
            summary = {"vocab_size": len(vocab), "pad_token_id": pad, "eos_token_id": vocab[MARIAN_EOS]}
            summary.update(unk_token_id=vocab[MARIAN_UNK], decoder_start_token_id=pad)
        elif args.kind == "clm":
            folder = train_clm_tokenizer(read_texts(args.train_file, args.languages), output, args.vocab_size)
            summary = {"vocab_size": len(json.loads((output / "tokenizer.json").read_text())["model"]["vocab"])}
            summary.update(pad_token_id=0, bos_token_id=1, eos_token_id=2)
        else:
            texts = read_texts(args.train_file, args.languages)
            folder = train_t5_tokenizer(texts, output, args.vocab_size, args.extra_ids, seed=args.seed)
            pieces = spm.SentencePieceProcessor(model_file=str(output / "spiece.model")).get_piece_size()
            summary = {"vocab_size": pieces + args.extra_ids, "pad_token_id": 0, "eos_token_id": 1}
            summary.update(unk_token_id=2, decoder_start_token_id=0)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(json.dumps({"output_dir": folder, **summary}))


if __name__ == "__main__":
    main()
