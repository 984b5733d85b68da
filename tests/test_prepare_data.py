"""`scripts/data/prepare_data.py`: each subcommand's files and counts, reading them back the way the fine-tuning
scripts do, idempotence (a second run rewrites nothing), determinism, rebuilds, and clear errors for missing sources.

The `verses` tests need PyPI `pysword` and Debian's `sword-text-kjv` and `sword-text-sparv`; `make test` on a fresh
machine has no Debian packages (installing them needs root), so those tests skip there with the install command.
"""

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import Image as ImageFeature
from datasets import load_dataset
from PIL import Image

from ea_hf.time_series import TimeSeriesDataset, load_uea, write_ts
from scripts.data import prepare_data
from scripts.data.prepare_data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    SWORD_PATH,
    class_folder,
    clean_verse,
    main,
    read_idx,
    stratified_sample,
)


SPLITS = ("train", "validation", "test")


def mtimes(folder: Path) -> dict[str, int]:
    return {str(path): path.stat().st_mtime_ns for path in sorted(folder.rglob("*"))}


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


# rotten_tomatoes


@pytest.fixture(scope="module")
def rotten_tomatoes(tmp_path_factory):
    return main(["rotten_tomatoes", "--output_dir", str(tmp_path_factory.mktemp("rt") / "out")])


def test_rotten_tomatoes_files_sizes_and_labels(rotten_tomatoes):
    assert sorted(path.name for path in rotten_tomatoes.iterdir()) == sorted(
        ["train.csv", "validation.csv", "test.csv", "label_names.json", "manifest.json"]
    )
    assert json.loads((rotten_tomatoes / "label_names.json").read_text()) == ["negative", "positive"]
    rows = {split: read_csv(rotten_tomatoes / f"{split}.csv") for split in SPLITS}
    assert {split: len(rows[split]) for split in SPLITS} == {"train": 6824, "validation": 853, "test": 853}
    for split_rows in rows.values():
        assert list(split_rows[0]) == ["sentence", "label"]
        assert {row["label"] for row in split_rows} == {"negative", "positive"}
    sentences = [{row["sentence"] for row in split_rows} for split_rows in rows.values()]
    assert not (sentences[0] & sentences[1] or sentences[0] & sentences[2] or sentences[1] & sentences[2])
    manifest = json.loads((rotten_tomatoes / "manifest.json").read_text())
    assert manifest["arguments"] == {"seed": 42}
    assert manifest["counts"] == {"train": 6824, "validation": 853, "test": 853}


def test_rotten_tomatoes_reads_as_csv_dataset(rotten_tomatoes, tmp_path):
    """What `run_glue.py --train_file --validation_file --test_file` loads: text column `sentence`, no missing value
    (pandas would turn a sentence such as `nan` into one)."""
    files = {split: str(rotten_tomatoes / f"{split}.csv") for split in SPLITS}
    data = load_dataset("csv", data_files=files, cache_dir=str(tmp_path))
    for split, size in (("train", 6824), ("validation", 853), ("test", 853)):
        assert data[split].num_rows == size
        assert data[split].features["sentence"].dtype in ("string", "large_string")
        assert data[split].data.column("sentence").null_count == 0
    assert sorted(data["train"].unique("label")) == ["negative", "positive"]


def test_rotten_tomatoes_second_run_rewrites_nothing(rotten_tomatoes, caplog):
    before = mtimes(rotten_tomatoes)
    with caplog.at_level("INFO"):
        assert main(["rotten_tomatoes", "--output_dir", str(rotten_tomatoes)]) == rotten_tomatoes
    assert mtimes(rotten_tomatoes) == before
    assert "already holds rotten_tomatoes" in caplog.text


def test_rotten_tomatoes_is_deterministic(rotten_tomatoes, tmp_path):
    again = main(["rotten_tomatoes", "--output_dir", str(tmp_path / "again")])
    for split in SPLITS:
        assert (again / f"{split}.csv").read_bytes() == (rotten_tomatoes / f"{split}.csv").read_bytes()
    other = main(["rotten_tomatoes", "--output_dir", str(tmp_path / "other"), "--seed", "1"])
    assert (other / "test.csv").read_bytes() != (rotten_tomatoes / "test.csv").read_bytes()


# fashion_mnist

needs_fashion_mnist = pytest.mark.skipif(
    not Path(FASHION_MNIST_DIR).is_dir(), reason="needs Debian's dataset-fashion-mnist (apt-get install it)"
)
SMALL = ["--max_train_samples", "50", "--validation_size", "20", "--max_eval_samples", "30"]


@pytest.fixture(scope="module")
def fashion_mnist(tmp_path_factory):
    return main(["fashion_mnist", "--output_dir", str(tmp_path_factory.mktemp("fm") / "out"), *SMALL])


@needs_fashion_mnist
def test_fashion_mnist_layout_counts_and_pngs(fashion_mnist):
    folders = [class_folder(name) for name in FASHION_MNIST_CLASSES]
    assert "T-shirt_top" in folders
    source = Path(FASHION_MNIST_DIR)
    train_images = read_idx(source / "train-images-idx3-ubyte.gz")
    test_images = read_idx(source / "t10k-images-idx3-ubyte.gz")
    names = {}
    for split, per_class in (("train", 5), ("validation", 2), ("test", 3)):
        assert sorted(path.name for path in (fashion_mnist / split).iterdir()) == sorted(folders)
        for folder in folders:
            assert len(list((fashion_mnist / split / folder).glob("*.png"))) == per_class
        names[split] = {path.name for path in (fashion_mnist / split).rglob("*.png")}
        path = next((fashion_mnist / split).rglob("*.png"))
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "L", (28, 28))
            source_images = test_images if split == "test" else train_images
            np.testing.assert_array_equal(np.asarray(image), source_images[int(path.stem)])
    assert not names["train"] & names["validation"]  # both index into the training file
    manifest = json.loads((fashion_mnist / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 50, "validation": 20, "test": 30}


@needs_fashion_mnist
def test_fashion_mnist_reads_as_imagefolder(fashion_mnist, tmp_path):
    """`imagefolder` finds the three splits and the ten classes (numbered alphabetically); every image's label is its
    folder. Also the `data_files` form that `--train_dir`/`--validation_dir` give."""
    data = load_dataset("imagefolder", data_dir=str(fashion_mnist), cache_dir=str(tmp_path / "a"))
    assert {split: data[split].num_rows for split in SPLITS} == {"train": 50, "validation": 20, "test": 30}
    label = data["train"].features["label"]
    assert label.names == sorted(class_folder(name) for name in FASHION_MNIST_CLASSES)
    for split in SPLITS:
        rows = data[split].cast_column("image", ImageFeature(decode=False))
        for row in rows:
            assert Path(row["image"]["path"]).parent.name == label.int2str(row["label"])
    assert data["test"][0]["image"].size == (28, 28)

    files = {split: str(fashion_mnist / split / "**") for split in ("train", "validation")}
    by_files = load_dataset("imagefolder", data_files=files, cache_dir=str(tmp_path / "b"))
    assert by_files["validation"].num_rows == 20
    assert by_files["train"].features["label"].names == label.names


@needs_fashion_mnist
def test_fashion_mnist_is_deterministic_and_idempotent(fashion_mnist, tmp_path):
    before = mtimes(fashion_mnist)
    main(["fashion_mnist", "--output_dir", str(fashion_mnist), *SMALL])
    assert mtimes(fashion_mnist) == before
    again = main(["fashion_mnist", "--output_dir", str(tmp_path / "again"), *SMALL])
    files = sorted(path.relative_to(fashion_mnist) for path in fashion_mnist.rglob("*.png"))
    assert files == sorted(path.relative_to(again) for path in again.rglob("*.png"))


def test_fashion_mnist_missing_source_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        main(["fashion_mnist", "--output_dir", str(tmp_path / "out"), "--source_dir", str(tmp_path / "nowhere")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz not found"):
        main(["fashion_mnist", "--output_dir", str(tmp_path / "out"), "--source_dir", str(tmp_path / "empty")])
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_stratified_sample_keeps_class_proportions():
    labels = np.repeat([0, 1, 2], [60, 30, 10])
    rng = np.random.default_rng(0)
    drawn = stratified_sample(labels, 10, rng)
    assert len(set(drawn.tolist())) == 10 and (np.diff(drawn) > 0).all()
    assert np.bincount(labels[drawn]).tolist() == [6, 3, 1]
    assert np.bincount(labels[stratified_sample(labels, 5, rng)]).tolist() == [3, 2]  # 3, 1.5, 0.5: ties in order
    with pytest.raises(ValueError, match="Cannot draw"):
        stratified_sample(labels, 101, rng)


# uea


def test_uea_copies_the_bundled_files(tmp_path):
    out = main(["uea", "--output_dir", str(tmp_path / "uea")])
    expected = {"BasicMotions": (40, 40, 6), "JapaneseVowels": (270, 370, 12)}  # train and test cases, channels
    for name, (train_size, test_size, channels) in expected.items():
        assert sorted(path.name for path in (out / name).iterdir()) == [f"{name}_TEST.ts", f"{name}_TRAIN.ts"]
        train = load_uea(name, data_dir=out)
        test = load_uea(name, data_dir=out, split="TEST", class_names=train.class_names)
        assert (len(train), len(test), train.num_channels) == (train_size, test_size, channels)
        bundled = load_uea(name)
        assert train.class_names == bundled.class_names and (train.labels == bundled.labels).all()
    assert json.loads((out / "manifest.json").read_text())["counts"]["JapaneseVowels"] == {"train": 270, "test": 370}


@pytest.fixture
def toy_ts_dir(tmp_path):
    """A `.ts` source folder with two tiny datasets, `Toy` (4 cases a split) and `Toy5` (5), in the flat layout."""
    folder = tmp_path / "source"
    folder.mkdir()
    for name, size in (("Toy", 4), ("Toy5", 5)):
        for split in ("TRAIN", "TEST"):
            series = [np.arange(6, dtype=np.float32).reshape(3, 2) + i for i in range(size)]
            dataset = TimeSeriesDataset(series, np.arange(size) % 2, ["a", "b"])
            write_ts(dataset, folder / f"{name}_{split}.ts", name)
    return folder


def test_uea_from_source_dir_rebuilds_on_other_arguments(toy_ts_dir, tmp_path):
    out = tmp_path / "uea"
    main(["uea", "--output_dir", str(out), "--names", "Toy", "--source_dir", str(toy_ts_dir)])
    assert len(load_uea("Toy", data_dir=out, split="TEST")) == 4
    (tmp_path / ".uea.partial").mkdir()  # as a killed run leaves it
    (tmp_path / ".uea.partial" / "junk").write_text("half")
    main(["uea", "--output_dir", str(out), "--names", "Toy5", "--source_dir", str(toy_ts_dir)])
    assert not (tmp_path / ".uea.partial").exists()
    assert sorted(path.name for path in out.iterdir()) == ["Toy5", "manifest.json"]
    assert len(load_uea("Toy5", data_dir=out, split="TEST")) == 5


def test_uea_missing_file_is_a_clear_error_and_leaves_the_output_alone(toy_ts_dir, tmp_path):
    out = tmp_path / "uea"
    main(["uea", "--output_dir", str(out), "--names", "Toy", "--source_dir", str(toy_ts_dir)])
    before = mtimes(out)
    with pytest.raises(FileNotFoundError, match="No Nope TRAIN file"):
        main(["uea", "--output_dir", str(out), "--names", "Nope", "--source_dir", str(toy_ts_dir)])
    assert mtimes(out) == before
    assert not (tmp_path / ".uea.partial").exists()


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="has no manifest.json"):
        main(["uea", "--output_dir", str(tmp_path / "mine")])
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# verses


def sword_modules_installed() -> bool:
    return all(
        (Path(SWORD_PATH) / "mods.d" / f"{module}.conf").is_file() for module in ("engKJV2006eb", "spaRV1909eb")
    )


needs_sword = pytest.mark.skipif(
    importlib.util.find_spec("pysword") is None or not sword_modules_installed(),
    reason="needs `pip install pysword` and, as root, `apt-get install sword-text-kjv sword-text-sparv`",
)
needs_pysword = pytest.mark.skipif(importlib.util.find_spec("pysword") is None, reason="needs `pip install pysword`")


def test_clean_verse_strips_markup():
    assert clean_verse(" ¶ And the \\nd LORD  said,\n unto Moses.  ") == "And the LORD said, unto Moses."
    assert clean_verse(" ¶  ") == ""


@needs_sword
def test_verses_first_pairs_as_translation_json_lines(tmp_path):
    argv = ["verses", "--output_dir", str(tmp_path / "v"), "--max_pairs", "200", "--validation_size", "20"]
    out = main([*argv, "--test_size", "30"])
    records = {split: (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines() for split in SPLITS}
    assert {split: len(lines) for split, lines in records.items()} == {"train": 150, "validation": 20, "test": 30}
    pairs = set()
    for lines in records.values():
        for line in lines:
            record = json.loads(line)
            assert list(record) == ["translation"] and list(record["translation"]) == ["en", "es"]
            en, es = record["translation"]["en"], record["translation"]["es"]
            assert en and es and en == en.strip() and es == es.strip()
            assert not any(mark in en + es for mark in "<>\\¶\n")
            pairs.add((en, es))
    assert len(pairs) == 200  # disjoint splits
    first = (
        "In the beginning God created the heaven and the earth.",
        "EN el principio crió Dios los cielos y la tierra.",
    )
    assert first in pairs
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["train"] == 150 and manifest["arguments"]["max_pairs"] == 200

    data = load_dataset("json", data_files=str(out / "validation.jsonl"), cache_dir=str(tmp_path / "cache"))
    assert data["train"][0]["translation"].keys() == {"en", "es"}

    with pytest.raises(ValueError, match="must be at least 1 and leave training pairs of the 200"):
        main(["verses", "--output_dir", str(tmp_path / "w"), "--max_pairs", "200"])  # 1000 + 1000 held out


@needs_pysword
def test_verses_without_the_sword_modules_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install sword-text-kjv sword-text-sparv"):
        main(["verses", "--output_dir", str(tmp_path / "v"), "--sword_path", str(tmp_path)])  # no mods.d/
    (tmp_path / "mods.d").mkdir()
    with pytest.raises(FileNotFoundError, match=r"modules \['engKJV2006eb', 'spaRV1909eb'\] are not installed"):
        main(["verses", "--output_dir", str(tmp_path / "v"), "--sword_path", str(tmp_path)])


def test_verses_without_pysword_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pysword", None)
    monkeypatch.setitem(sys.modules, "pysword.modules", None)
    with pytest.raises(ModuleNotFoundError, match="pip install pysword"):
        main(["verses", "--output_dir", str(tmp_path / "v")])
    assert not (tmp_path / "v").exists()


def test_vit_conv_study_reads_idx_through_prepare_data():
    from scripts.research import vit_conv_study

    assert vit_conv_study.read_idx is prepare_data.read_idx
