"""The `.ts` reader/writer on files written here, the BasicMotions and JapaneseVowels files bundled in aeon (installed
with `--no-deps` by `make test`), and the standardiser, split and padding built on them."""

import json
import math

import numpy as np
import pytest
import torch

from ea_hf.time_series import (
    Standardizer,
    TimeSeriesDataset,
    bundled_uea_dir,
    load_uea,
    pad_batch,
    read_ts,
    train_validation_split,
    write_ts,
)


HEADER = "@problemName Toy\n@timeStamps false\n@missing {missing}\n@univariate {univariate}\n{extra}@data\n"


def write(tmp_path, text, name="toy.ts"):
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_same(a: TimeSeriesDataset, b: TimeSeriesDataset):
    assert len(a) == len(b) and a.class_names == b.class_names
    for x, y in zip(a.series, b.series):
        np.testing.assert_array_equal(x, y)  # NaN == NaN here
    np.testing.assert_array_equal(a.labels, b.labels)


def round_trip(tmp_path, dataset):
    path = tmp_path / "round_trip.ts"
    write_ts(dataset, path, problem_name="RoundTrip")
    again = read_ts(path)
    assert_same(dataset, again)
    assert again.metadata["problemName"] == "RoundTrip"
    return again


def test_multivariate_unequal_length_missing_values(tmp_path):
    text = HEADER.format(missing="true", univariate="false", extra="@dimensions 2\n@equalLength false\n")
    text = text.replace("@data", "@classLabel true up down\n@data")
    text += "# a comment between cases\n1,2,3:4,?,6:down\n\n0.5,?:-1,1e3:up\n"
    dataset = read_ts(write(tmp_path, "# header comment\n" + text))
    assert dataset.class_names == ["up", "down"] and dataset.labels.tolist() == [1, 0]
    assert dataset.labels.dtype == np.int64 and dataset.is_classification
    assert (dataset.num_channels, dataset.max_length) == (2, 3)
    np.testing.assert_array_equal(dataset.series[0], np.array([[1, 4], [2, np.nan], [3, 6]], dtype=np.float32))
    np.testing.assert_array_equal(dataset.series[1], np.array([[0.5, -1], [np.nan, 1000]], dtype=np.float32))
    assert dataset.series[0].dtype == np.float32
    assert dataset.metadata == {
        "problemName": "Toy",
        "timeStamps": False,
        "missing": True,
        "univariate": False,
        "dimensions": 2,
        "equalLength": False,
        "classLabel": True,
    }
    again = round_trip(tmp_path, dataset)
    assert again.metadata["missing"] is True and again.metadata["equalLength"] is False


def test_equal_length_univariate_lowercase_tags(tmp_path):
    text = "@problemname Toy\n@timestamps false\n@univariate true\n@equallength true\n@serieslength 3\n"
    text += "@classlabel True 0.0 1.0\n@data\n1,2,3:1.0\n4,5,6:0.0\n7,8,9:1.0\n"
    dataset = read_ts(write(tmp_path, text))
    assert dataset.metadata["seriesLength"] == 3 and dataset.metadata["equalLength"] is True
    assert dataset.class_names == ["0.0", "1.0"] and dataset.labels.tolist() == [1, 0, 1]
    assert [case.shape for case in dataset.series] == [(3, 1)] * 3
    again = round_trip(tmp_path, dataset)
    assert again.metadata["seriesLength"] == 3 and again.metadata["univariate"] is True


def test_dimensions_of_unequal_length_within_a_case(tmp_path):
    text = HEADER.format(missing="false", univariate="false", extra="@classLabel true a b\n")
    text += "1,2,3,4:5,6:7,8,9:a\n1:2:3:b\n"
    dataset = read_ts(write(tmp_path, text))
    nan = np.nan
    expected = np.array([[1, 5, 7], [2, 6, 8], [3, nan, 9], [4, nan, nan]], dtype=np.float32)
    np.testing.assert_array_equal(dataset.series[0], expected)
    assert dataset.series[1].shape == (1, 3)
    round_trip(tmp_path, dataset)  # the NaN padding is written as trailing `?` and read back the same


def test_regression_targets(tmp_path):
    text = HEADER.format(missing="false", univariate="false", extra="@dimensions 2\n@classLabel false\n")
    text = text.replace("@data", "@targetLabel true\n@data")
    text += "1,2:3,4:0.25\n5,6,7:8,9,10:-1.5e2\n"
    dataset = read_ts(write(tmp_path, text))
    assert not dataset.is_classification and dataset.class_names is None
    assert dataset.labels.dtype == np.float32 and dataset.labels.tolist() == [0.25, -150.0]
    again = round_trip(tmp_path, dataset)
    assert again.metadata["targetLabel"] is True and again.metadata["classLabel"] is False
    with pytest.raises(ValueError, match="no @classLabel true"):
        read_ts(tmp_path / "toy.ts", class_names=["a"])


def test_unlabelled(tmp_path):
    dataset = read_ts(write(tmp_path, HEADER.format(missing="false", univariate="true", extra="") + "1,2\n3\n"))
    assert dataset.labels is None and [len(case) for case in dataset.series] == [2, 1]
    round_trip(tmp_path, dataset)


def test_values_survive_writing_exactly(tmp_path):
    rng = np.random.default_rng(0)
    series = [(rng.normal(size=(n, 3)) * 10.0 ** rng.integers(-8, 8)).astype(np.float32) for n in (5, 9)]
    series[1][2, 1] = np.nan
    series[1][4] = np.nan  # a time step missing in every channel
    dataset = TimeSeriesDataset(series, np.array([1, 0]), ["x", "y"])
    again = round_trip(tmp_path, dataset)
    assert again.metadata["missing"] is True


def test_class_order_from_train_file(tmp_path):
    train = write(tmp_path, HEADER.format(missing="false", univariate="true", extra="@classLabel true b a c\n"))
    train.write_text(train.read_text() + "1:b\n2:a\n3:c\n")
    test = write(tmp_path, HEADER.format(missing="false", univariate="true", extra="@classLabel true a b\n"), "t.ts")
    test.write_text(test.read_text() + "1:a\n2:b\n")
    class_names = read_ts(train).class_names
    assert read_ts(test).labels.tolist() == [0, 1]  # the file's own order
    dataset = read_ts(test, class_names=class_names)
    assert dataset.class_names == ["b", "a", "c"] and dataset.labels.tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"t\.ts, line 8: class label 'b' is not in the given class_names"):
        read_ts(test, class_names=["a", "c"])


@pytest.mark.parametrize(
    "extra, data, error, message",
    [
        (
            "@dimensions 2\n@classLabel true a\n",
            "1,2:3:a\n1,2:a\n",
            ValueError,
            r"line 9: expected 2 dimensions",
        ),
        ("@classLabel true a\n", "1,2:a\n1,x:a\n", ValueError, r"line 8, dimension 0: 'x' is not a number"),
        ("@classLabel true a\n", "1,,2:a\n", ValueError, r"line 7, dimension 0: '' is not a number"),
        (
            "@classLabel true a b\n",
            "1:a\n2:c\n",
            ValueError,
            r"line 8: class label 'c' is not declared",
        ),
        ("@classLabel true\n", "1:a\n", ValueError, r"line 5: @classLabel true must list the class labels"),
        ("@classLabel true a a\n", "1:a\n", ValueError, r"line 5: @classLabel lists a class twice"),
        ("@classLabel maybe a\n", "1:a\n", ValueError, r"line 5: @classLabel must be true or false, got 'maybe'"),
        ("@seriesLength ten\n", "1\n", ValueError, r"line 5: @seriesLength must be an integer"),
        (
            "@classLabel false\n@targetLabel true\n",
            "1:x\n",
            ValueError,
            r"line 8: regression target 'x'",
        ),
        ("@classLabel true a\n@targetLabel true\n", "1:a\n", ValueError, r"line 7: a file cannot have both"),
        ("@classLabel true a\n", "", ValueError, r"no cases after @data"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, extra, data, error, message):
    path = write(tmp_path, HEADER.format(missing="false", univariate="true", extra=extra) + data)
    with pytest.raises(error, match=rf"toy\.ts.*{message}"):
        read_ts(path)


def test_missing_data_line_and_time_stamps(tmp_path):
    with pytest.raises(ValueError, match=r"toy\.ts: no @data line"):
        read_ts(write(tmp_path, "@problemName Toy\n@univariate true\n"))
    with pytest.raises(ValueError, match=r"toy\.ts, line 2: a case before @data"):
        read_ts(write(tmp_path, "@problemName Toy\n1,2,3\n@data\n"))
    stamped = "@problemName Toy\n@timeStamps true\n@classLabel true 1\n@data\n(2007-01-01 00:00:00,1.5):1\n"
    with pytest.raises(NotImplementedError, match=r"toy\.ts: @timeStamps true"):
        read_ts(write(tmp_path, stamped))


def test_write_rejects_what_ts_cannot_hold(tmp_path):
    series = [np.zeros((2, 1), dtype=np.float32)] * 2
    with pytest.raises(ValueError, match="cannot be empty or hold spaces"):
        write_ts(TimeSeriesDataset(series, np.array([0, 1]), ["a b", "c"]), tmp_path / "x.ts", "X")
    with pytest.raises(ValueError, match="one regression target per case"):
        write_ts(TimeSeriesDataset(series, np.zeros((2, 2), dtype=np.float32)), tmp_path / "x.ts", "X")


def test_dataset_checks_its_fields():
    with pytest.raises(ValueError, match="2 cases but 3 labels"):
        TimeSeriesDataset([np.zeros((2, 1))] * 2, np.zeros(3))
    with pytest.raises(ValueError, match="one channel count"):
        TimeSeriesDataset([np.zeros((2, 1)), np.zeros((2, 2))], np.zeros(2))


@pytest.fixture(scope="module")
def basic_motions():
    train = load_uea("BasicMotions")
    return train, load_uea("BasicMotions", split="TEST", class_names=train.class_names)


@pytest.fixture(scope="module")
def japanese_vowels():
    train = load_uea("JapaneseVowels")
    return train, load_uea("JapaneseVowels", split="test", class_names=train.class_names)


def test_bundled_basic_motions(basic_motions):
    train, test = basic_motions
    assert (len(train), len(test)) == (40, 40)
    assert train.class_names == test.class_names == ["Standing", "Running", "Walking", "Badminton"]
    for dataset in (train, test):
        assert dataset.num_channels == 6 and {case.shape for case in dataset.series} == {(100, 6)}
        assert np.bincount(dataset.labels).tolist() == [10, 10, 10, 10]
        assert not any(np.isnan(case).any() for case in dataset.series)
        assert dataset.metadata["problemName"] == "BasicMotions" and dataset.metadata["equalLength"] is True


def test_bundled_japanese_vowels(japanese_vowels):
    train, test = japanese_vowels
    assert (len(train), len(test)) == (270, 370)
    assert train.class_names == test.class_names == [str(k) for k in range(1, 10)]
    assert np.bincount(train.labels).tolist() == [30] * 9
    assert np.bincount(test.labels, minlength=9).min() > 0
    lengths = [len(case) for case in train.series + test.series]
    assert (min(lengths), max(lengths)) == (7, 29) and train.max_length == 26 and test.max_length == 29
    for dataset in (train, test):
        assert dataset.num_channels == 12 and dataset.metadata["equalLength"] is False
        assert not any(np.isnan(case).any() for case in dataset.series)


def test_bundled_first_case_matches_the_text(japanese_vowels):
    """The first JapaneseVowels TRAIN case, parsed independently from the raw text."""
    lines = (bundled_uea_dir() / "JapaneseVowels" / "JapaneseVowels_TRAIN.ts").read_text().splitlines()
    *dimensions, label = lines[lines.index("@data") + 1].split(":")
    expected = np.array([[float(v) for v in d.split(",")] for d in dimensions], dtype=np.float32).T
    np.testing.assert_array_equal(japanese_vowels[0].series[0], expected)
    assert japanese_vowels[0].class_names[japanese_vowels[0].labels[0]] == label


def test_load_uea_from_a_folder(tmp_path, basic_motions):
    write_ts(basic_motions[0], tmp_path / "Toy_TRAIN.ts", "Toy")
    (tmp_path / "Nested").mkdir()
    write_ts(basic_motions[1], tmp_path / "Nested" / "Nested_TEST.ts", "Nested")
    assert_same(load_uea("Toy", data_dir=tmp_path), basic_motions[0])
    assert_same(load_uea("Nested", data_dir=tmp_path, split="TEST"), basic_motions[1])
    with pytest.raises(FileNotFoundError, match=r"No Toy TEST file.*pip install --no-deps aeon==1\.6\.0"):
        load_uea("Toy", data_dir=tmp_path, split="TEST")
    with pytest.raises(ValueError, match="split must be TRAIN or TEST"):
        load_uea("Toy", data_dir=tmp_path, split="VALIDATION")


def test_load_uea_without_aeon(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"aeon is not installed.*timeseriesclassification\.com"):
        load_uea("BasicMotions")


def test_standardizer_fits_on_train_only(japanese_vowels):
    train, test = japanese_vowels
    standardizer = Standardizer().fit(train)
    values = np.concatenate(standardizer.transform(train).series).astype(np.float64)
    np.testing.assert_allclose(values.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(values.std(axis=0), 1, atol=1e-5)
    test_values = np.concatenate(standardizer.transform(test).series)
    assert np.abs(test_values.mean(axis=0)).max() > 1e-3  # test statistics were not used
    restored = Standardizer.from_dict(json.loads(json.dumps(standardizer.to_dict())))
    np.testing.assert_array_equal(restored.transform(test).series[0], standardizer.transform(test).series[0])
    assert train.series[0].dtype == standardizer.transform(train).series[0].dtype == np.float32
    np.testing.assert_array_equal(train.series[0], load_uea("JapaneseVowels").series[0])  # input left unchanged


def test_standardizer_missing_values_and_constant_channel():
    series = [np.array([[1, 5, np.nan], [3, 5, np.nan]], dtype=np.float32), np.array([[np.nan, 5, 2]], np.float32)]
    standardizer = Standardizer().fit(TimeSeriesDataset(series, None))
    np.testing.assert_allclose(standardizer.mean, [2, 5, 2])
    np.testing.assert_allclose(standardizer.std, [1, 1, 1])  # channel 1 is constant, channel 2 has one value
    transformed = standardizer.transform(TimeSeriesDataset(series, None)).series
    np.testing.assert_array_equal(transformed[0], np.array([[-1, 0, np.nan], [1, 0, np.nan]], dtype=np.float32))
    with pytest.raises(ValueError, match=r"Channels \[0\] have no observed values"):
        Standardizer().fit(TimeSeriesDataset([np.full((2, 1), np.nan, dtype=np.float32)], None))
    with pytest.raises(ValueError, match="before fit"):
        Standardizer().transform(TimeSeriesDataset(series, None))
    with pytest.raises(ValueError, match="Fitted on 3 channels, dataset has 1"):
        standardizer.transform(TimeSeriesDataset([np.zeros((1, 1), dtype=np.float32)], None))


def test_split_is_stratified_seeded_and_disjoint(japanese_vowels):
    train = japanese_vowels[0]
    fit, validation = train_validation_split(train, validation_fraction=0.2, seed=0)
    assert (len(fit), len(validation)) == (216, 54)
    assert np.bincount(validation.labels).tolist() == [6] * 9 and np.bincount(fit.labels).tolist() == [24] * 9
    assert fit.class_names == validation.class_names == train.class_names
    ids = {id(case) for case in fit.series}
    assert ids.isdisjoint(id(case) for case in validation.series)
    assert len(ids | {id(case) for case in validation.series}) == len(train)
    again, _ = train_validation_split(train, validation_fraction=0.2, seed=0)
    other, _ = train_validation_split(train, validation_fraction=0.2, seed=1)
    assert [id(case) for case in again.series] == [id(case) for case in fit.series]
    assert [id(case) for case in other.series] != [id(case) for case in fit.series]


def test_split_small_classes_and_regression():
    series = [np.full((1, 1), i, dtype=np.float32) for i in range(6)]
    dataset = TimeSeriesDataset(series, np.array([0, 0, 1, 1, 1, 2]), ["a", "b", "c"])
    fit, validation = train_validation_split(dataset, validation_fraction=0.1, seed=0)
    assert sorted(validation.labels.tolist()) == [0, 1]  # at least one of each class that has two cases
    assert sorted(fit.labels.tolist()) == [0, 1, 1, 2]  # the single `c` stays in train
    fit, validation = train_validation_split(TimeSeriesDataset(series, np.arange(6.0)), 0.5, seed=3)
    assert (len(fit), len(validation)) == (3, 3)
    assert sorted(fit.labels.tolist() + validation.labels.tolist()) == list(range(6))
    with pytest.raises(ValueError, match=r"validation_fraction must be in \(0, 1\)"):
        train_validation_split(dataset, 1.0, seed=0)


def test_pad_batch():
    short = np.array([[1, 2], [np.nan, np.nan], [3, np.nan]], dtype=np.float32)
    long = np.arange(10, dtype=np.float32).reshape(5, 2)
    values, attention_mask = pad_batch([short, long])
    assert values.shape == (2, 5, 2) and values.dtype == torch.float32
    assert attention_mask.dtype == torch.long
    assert attention_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]  # the all-missing step 1 is a real step
    assert values[0].tolist() == [[1, 2], [0, 0], [3, 0], [0, 0], [0, 0]]
    torch.testing.assert_close(values[1], torch.from_numpy(long))
    assert not torch.isnan(values).any()
    values, attention_mask = pad_batch([short], max_length=8)
    assert values.shape == (1, 8, 2) and attention_mask.sum().item() == 3
    with pytest.raises(ValueError, match="5 time steps, more than max_length=4"):
        pad_batch([short, long], max_length=4)
    with pytest.raises(ValueError, match="same number of channels"):
        pad_batch([short, np.zeros((2, 3), dtype=np.float32)])


def test_pad_batch_on_bundled_data(japanese_vowels):
    train = Standardizer().fit(japanese_vowels[0]).transform(japanese_vowels[0])
    values, attention_mask = pad_batch(train.series[:16], max_length=train.max_length)
    assert values.shape == (16, 26, 12)
    assert attention_mask.sum(dim=1).tolist() == [len(case) for case in train.series[:16]]
    assert math.isclose(values[attention_mask == 0].abs().sum().item(), 0.0)
