"""The `time-series-classification` pipeline (`ea_hf.pipeline_time_series`): equality with a manual forward
(standardise with the config's standardizer, pad, softmax) for arrays, lists of series of different lengths, CSV
files and `top_k`; clear errors; registration with `transformers.pipeline`; and the saved folder loading as remote
code where ea_hf cannot be imported.

The models are a tiny EA-DC-Transformer and a tiny TST, each with a standardizer in its config as `run_uea.py` saves.
"""

import json

import numpy as np
import pytest
import torch
from transformers import pipeline

from ea_hf import EADCTransformerConfig, EADCTransformerForTimeSeriesClassification, TimeSeriesClassificationPipeline
from ea_hf.custom_pipelines import save_time_series_pipeline
from ea_hf.modeling_tst import TSTConfig, TSTForTimeSeriesClassification
from ea_hf.time_series import Standardizer, TimeSeriesDataset, pad_batch

from ea_model_tester import run_without_ea_hf


pytestmark = pytest.mark.usefixtures("one_thread")

TASK = "time-series-classification"
CHANNELS, CONTEXT = 3, 16
LABELS = {0: "walk", 1: "run", 2: "sit"}
STANDARDIZER = {"mean": [1.0, -2.0, 0.5], "std": [2.0, 0.5, 3.0]}
TOLERANCE = 1e-5


def make_series(length: int, seed: int, missing: bool = True) -> np.ndarray:
    """Raw (unstandardised) values [length, CHANNELS] around the standardizer's mean, a few NaN."""
    rng = np.random.default_rng(seed)
    series = (rng.normal(size=(length, CHANNELS)) * STANDARDIZER["std"] + STANDARDIZER["mean"]).astype(np.float32)
    if missing and length > 2:
        series[1, 0] = np.nan
        series[length // 2, 2] = np.nan
    return series


SERIES = [make_series(length, seed) for seed, length in enumerate((CONTEXT, 5, 9, 1, 12))]


def with_standardizer(model):
    """The model in eval mode (BatchNorm's running statistics), with the standardizer in its config."""
    model.config.standardizer = dict(STANDARDIZER)
    return model.eval()


@pytest.fixture(scope="module")
def ea_dc():
    config = EADCTransformerConfig(
        num_channels=CHANNELS,
        context_length=CONTEXT,
        d_model=16,
        num_blocks=2,
        num_attention_heads=2,
        dim_feedforward=16,
        dropout=0.0,
        ea_alpha=0.5,
        ea_beta=0.5,
        id2label=LABELS,
    )
    torch.manual_seed(0)
    return with_standardizer(EADCTransformerForTimeSeriesClassification(config))


@pytest.fixture(scope="module")
def tst():
    config = TSTConfig(
        num_channels=CHANNELS,
        context_length=CONTEXT,
        d_model=16,
        num_layers=1,
        num_attention_heads=2,
        dim_feedforward=16,
        dropout=0.0,
        id2label=LABELS,
    )
    torch.manual_seed(0)
    return with_standardizer(TSTForTimeSeriesClassification(config))


@pytest.fixture(params=["ea_dc", "tst"])
def model(request):
    return request.getfixturevalue(request.param)


def classifier(model, **kwargs):
    """A pipeline that leaves the model where it is (the default would move it to a GPU if there is one)."""
    return TimeSeriesClassificationPipeline(model=model, device=-1, **kwargs)


def manual_scores(model, series_list, standardize=True) -> torch.Tensor:
    """Softmax [N, labels] of one padded batch, standardised as run_uea.py does (`Standardizer`, `pad_batch`)."""
    dataset = TimeSeriesDataset(series_list, None)
    if standardize:
        dataset = Standardizer.from_dict(model.config.standardizer).transform(dataset)
    values, attention_mask = pad_batch(dataset.series)
    with torch.no_grad():
        logits = model(past_values=values, attention_mask=attention_mask).logits
    return torch.softmax(logits, dim=-1)


def as_scores(records) -> torch.Tensor:
    """[{"label", "score"}, ...] for every label -> scores [labels] in label-index order."""
    by_label = {record["label"]: record["score"] for record in records}
    assert sorted(by_label) == sorted(LABELS.values())
    return torch.tensor([by_label[LABELS[i]] for i in range(len(LABELS))])


def assert_close(got: torch.Tensor, expected: torch.Tensor, message=""):
    difference = (got - expected).abs().max().item()
    assert difference <= TOLERANCE, f"{message}: {difference}"


def assert_sorted_records(records, count):
    assert isinstance(records, list) and len(records) == count
    assert all(list(record) == ["label", "score"] for record in records)
    scores = [record["score"] for record in records]
    assert scores == sorted(scores, reverse=True)


def test_one_series_equals_manual_forward(model):
    pipe = classifier(model)
    series = SERIES[2]
    expected = manual_scores(model, [series])[0]
    best = int(expected.argmax())
    nested = [[None if np.isnan(v) else float(v) for v in row] for row in series]  # None = missing
    for inputs in (series, torch.from_numpy(series), nested):
        result = pipe(inputs)
        assert_sorted_records(result, 1)  # top_k 1 by default: a list with one dict
        assert result[0]["label"] == LABELS[best]
        assert abs(result[0]["score"] - expected[best].item()) <= TOLERANCE
        assert_close(as_scores(pipe(inputs, top_k=None)), expected, type(inputs).__name__)
    # the standardizer matters: without it the raw values go in
    scores = [as_scores(pipe(s, top_k=None)) for s in SERIES]
    assert max((a - b).abs().max().item() for a, b in zip(scores, scores[1:])) > 1e-3  # the model looks at its input
    standardizer = model.config.standardizer
    del model.config.standardizer
    try:
        raw = as_scores(classifier(model)(series, top_k=None))
        assert_close(raw, manual_scores(model, [series], standardize=False)[0], "no standardizer")
    finally:
        model.config.standardizer = standardizer
    assert (raw - expected).abs().max().item() > 1e-4


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_list_of_series_of_different_lengths(model, batch_size):
    """Each series gets the scores it gets alone (padding invariance), whatever the batch it is padded in."""
    pipe = classifier(model)
    alone = torch.stack([manual_scores(model, [series])[0] for series in SERIES])
    assert_close(manual_scores(model, SERIES), alone, "manual padded batch vs alone")
    result = pipe(SERIES, top_k=None, batch_size=batch_size)
    assert isinstance(result, list) and len(result) == len(SERIES)
    for records in result:
        assert_sorted_records(records, len(LABELS))
    assert_close(torch.stack([as_scores(records) for records in result]), alone, f"batch_size={batch_size}")
    default = pipe(SERIES, batch_size=batch_size)  # a list input gives a list of lists, also with the default top_k
    assert [records[0]["label"] for records in default] == [LABELS[int(i)] for i in alone.argmax(-1)]
    assert all(len(records) == 1 for records in default)
    assert pipe(tuple(SERIES[:2])) == pipe(SERIES[:2])
    nested = [series.tolist() for series in SERIES[:3]]  # nested lists [N][T][C] (NaN as float)
    assert_close(torch.stack([as_scores(r) for r in pipe(nested, top_k=None)]), alone[:3], "nested lists")
    streamed = list(pipe((series for series in SERIES), top_k=None, batch_size=batch_size))  # a generator
    assert_close(torch.stack([as_scores(r) for r in streamed]), alone, "generator")


def write_csv(path, series, header=None, missing=""):
    lines = [header] if header is not None else []
    lines += [",".join(missing if np.isnan(v) else repr(float(v)) for v in row) for row in series]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_file_with_and_without_header(ea_dc, tmp_path):
    pipe = classifier(ea_dc)
    series = SERIES[4]
    expected = manual_scores(ea_dc, [series])[0]
    files = [
        write_csv(tmp_path / "plain.csv", series),
        write_csv(tmp_path / "header.csv", series, header="acc_x,acc_y,acc_z"),
        write_csv(tmp_path / "question_marks.csv", series, header="x, y, z", missing="?"),
    ]
    for path in files:
        for inputs in (path, str(path)):
            assert_close(as_scores(pipe(inputs, top_k=None)), expected, path.name)
        assert pipe(path) == pipe(series)
    # a list of files (and arrays) of different lengths
    short = write_csv(tmp_path / "short.csv", SERIES[1], header="a,b,c")
    result = pipe([files[1], short, SERIES[3]], top_k=None, batch_size=3)
    expected_all = torch.stack([manual_scores(ea_dc, [s])[0] for s in (series, SERIES[1], SERIES[3])])
    assert_close(torch.stack([as_scores(r) for r in result]), expected_all, "list of CSV files")


def test_top_k(ea_dc):
    pipe = classifier(ea_dc)
    series = SERIES[0]
    everything = pipe(series, top_k=None)
    assert_sorted_records(everything, 3)
    assert abs(sum(record["score"] for record in everything) - 1) <= TOLERANCE
    assert pipe(series, top_k=2) == everything[:2]
    assert pipe(series, top_k=1) == pipe(series) == everything[:1]
    assert pipe(series, top_k=10) == everything  # more than the labels: all of them
    assert classifier(ea_dc, top_k=2)(series) == everything[:2]  # an init parameter, the call's wins
    assert classifier(ea_dc, top_k=2)(series, top_k=3) == everything
    assert [len(r) for r in pipe(SERIES[:3], top_k=2)] == [2, 2, 2]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="top_k"):
            pipe(series, top_k=bad)
    with pytest.raises(TypeError, match="unexpected parameters"):
        pipe(series, function_to_apply="softmax")


@pytest.mark.parametrize(
    "inputs, error, message",
    [
        (make_series(6, 0)[:, :2], ValueError, "2 channels.*takes 3"),
        (make_series(CONTEXT + 1, 0), ValueError, "17 time steps, more than the model's context_length = 16"),
        (make_series(6, 0)[:, 0], ValueError, "must be 2-D.*univariate series is \\[T, 1\\]"),
        (make_series(6, 0)[None], ValueError, "must be 2-D.*a batch is a list"),
        (np.full((4, CHANNELS), np.nan, dtype=np.float32), ValueError, "Every value of the series.*missing"),
        (np.zeros((0, CHANNELS), dtype=np.float32), ValueError, "no time steps"),
        (np.array([[1.0, np.inf, 0.0]]), ValueError, "inf"),
        ([[1.0, 2.0, 3.0], [1.0, 2.0]], ValueError, "shape \\[time steps, channels\\]"),
        ([], ValueError, "empty list"),
        ([SERIES[0], make_series(4, 1)[:, :1]], ValueError, "^Series 1: .*1 channels"),
        ("no/such/file.csv", FileNotFoundError, "No such CSV file: no/such/file.csv"),
        (3.5, TypeError, "takes a series"),
    ],
    ids=[
        "channels",
        "too-long",
        "1-d",
        "3-d",
        "all-nan",
        "empty-series",
        "inf",
        "ragged",
        "empty-list",
        "bad-series-in-list",
        "missing-file",
        "not-a-series",
    ],
)
def test_bad_inputs_are_clear_errors(ea_dc, inputs, error, message):
    with pytest.raises(error, match=message):
        classifier(ea_dc)(inputs)


def test_bad_csv_files(ea_dc, tmp_path):
    pipe = classifier(ea_dc)
    (tmp_path / "words.csv").write_text("a,b,c\n1,2,3\n4,x,6\n")
    with pytest.raises(ValueError, match="words.csv, line 3: 'x' is not a number"):
        pipe(tmp_path / "words.csv")
    (tmp_path / "ragged.csv").write_text("1,2,3\n4,5\n")
    with pytest.raises(ValueError, match="line 2: 2 columns"):
        pipe(tmp_path / "ragged.csv")
    (tmp_path / "header_only.csv").write_text("a,b,c\n")
    with pytest.raises(ValueError, match="no data lines"):
        pipe(tmp_path / "header_only.csv")
    (tmp_path / "two_channels.csv").write_text("1,2\n3,4\n")
    with pytest.raises(ValueError, match="2 channels"):
        pipe(tmp_path / "two_channels.csv")
    with pytest.raises(FileNotFoundError):
        pipe([SERIES[0], tmp_path / "missing.csv"])


def test_bad_models_and_standardizers(ea_dc):
    config = EADCTransformerConfig(**{**ea_dc.config.to_dict(), "problem_type": "regression"})
    with pytest.raises(ValueError, match="regression"):
        classifier(EADCTransformerForTimeSeriesClassification(config))
    model = EADCTransformerForTimeSeriesClassification(ea_dc.config)
    model.config = EADCTransformerConfig(**ea_dc.config.to_dict())
    model.config.standardizer = {"mean": [0.0, 0.0], "std": [1.0, 1.0]}
    with pytest.raises(ValueError, match="standardizer has 2 channels"):
        classifier(model)
    model.config.standardizer = {"mean": [0.0] * 3, "std": [1.0, 0.0, 1.0]}
    with pytest.raises(ValueError, match="not positive"):
        classifier(model)


def test_transformers_pipeline_after_registration(ea_dc, tmp_path):
    """`import ea_hf` registers the task: a model, or a plain folder (no pipeline code), gets this pipeline."""
    pipe = pipeline(TASK, model=ea_dc, device="cpu")
    assert type(pipe) is TimeSeriesClassificationPipeline and pipe.task == TASK
    assert pipe(SERIES, top_k=None) == classifier(ea_dc)(SERIES, top_k=None)
    ea_dc.save_pretrained(tmp_path)
    assert "custom_pipelines" not in json.loads((tmp_path / "config.json").read_text())
    loaded = pipeline(TASK, model=str(tmp_path), device="cpu")
    assert type(loaded) is TimeSeriesClassificationPipeline
    assert loaded.model.config.standardizer == STANDARDIZER
    expected = manual_scores(ea_dc, SERIES)
    got = torch.stack([as_scores(r) for r in loaded(SERIES, top_k=None, batch_size=2)])
    assert_close(got, expected, "plain folder")


def test_saved_folder_loads_as_remote_code_without_ea_hf(ea_dc, tst, tmp_path):
    """`save_time_series_pipeline` (and `pipe.save_pretrained`) write a folder that `pipeline(TASK, model=folder,
    trust_remote_code=True)` loads in a fresh interpreter that cannot import ea_hf, with the same outputs for arrays,
    a list of series and a CSV file; the remote copy saves such a folder again; without trust_remote_code it
    refuses."""
    folder = save_time_series_pipeline(ea_dc, tmp_path / "ea_dc")
    classifier(ea_dc).save_pretrained(tmp_path / "via_save_pretrained")
    for saved in (folder, tmp_path / "via_save_pretrained"):
        config = json.loads((saved / "config.json").read_text())
        assert config["custom_pipelines"] == {
            TASK: {
                "impl": "pipeline_time_series.TimeSeriesClassificationPipeline",
                "pt": ["AutoModelForSequenceClassification"],
                "type": "time-series",
            }
        }
        assert config["standardizer"] == STANDARDIZER
        code = (saved / "pipeline_time_series.py").read_text()
        assert "import ea_hf" not in code and "from ea_hf" not in code and "from ." not in code
    assert "custom_pipelines" not in ea_dc.config.to_dict()  # the entry was written for the save only
    save_time_series_pipeline(tst, tmp_path / "tst")  # not registered with the Auto classes: loads with ea_hf only
    assert "custom_pipelines" not in tst.config.to_dict()

    np.savez(tmp_path / "series.npz", *SERIES)
    csv_path = write_csv(tmp_path / "series.csv", SERIES[2], header="x,y,z")
    pipe = classifier(ea_dc)
    expected = {
        "one": pipe(SERIES[0], top_k=None),
        "list": pipe(SERIES, top_k=None, batch_size=3),
        "csv": pipe(str(csv_path), top_k=2),
        "default": pipe(SERIES[1]),
    }
    run_without_ea_hf(
        f"""
        import json
        import numpy as np
        import torch
        from transformers import pipeline
        torch.set_num_threads(1)
        root, task = {str(tmp_path)!r}, {TASK!r}
        arrays = np.load(root + "/series.npz")
        series = [arrays[f"arr_{{i}}"] for i in range(len(arrays.files))]

        def outputs(pipe):
            return {{
                "one": pipe(series[0], top_k=None),
                "list": pipe(series, top_k=None, batch_size=3),
                "csv": pipe(root + "/series.csv", top_k=2),
                "default": pipe(series[1]),
            }}

        results = {{}}
        for name in ("ea_dc", "via_save_pretrained"):
            pipe = pipeline(task, model=root + "/" + name, trust_remote_code=True, device="cpu")
            assert type(pipe).__name__ == "TimeSeriesClassificationPipeline", type(pipe)
            assert type(pipe).__module__.startswith("transformers_modules"), type(pipe).__module__
            assert type(pipe.model).__name__ == "EADCTransformerForTimeSeriesClassification", type(pipe.model)
            assert type(pipe.model).__module__.startswith("transformers_modules"), type(pipe.model).__module__
            results[name] = outputs(pipe)
            try:
                pipe(series[0][:, :2])
            except ValueError as error:
                assert "channels" in str(error), error
            else:
                raise AssertionError("accepted 2 channels")
        # the remote copy saves itself again: a folder saved where ea_hf is not installed loads too
        before = pipe.model.config.to_dict().get("custom_pipelines")  # loaded from the folder's config.json
        pipe.save_pretrained(root + "/resaved")
        assert pipe.model.config.to_dict().get("custom_pipelines") == before
        resaved = pipeline(task, model=root + "/resaved", trust_remote_code=True, device="cpu")
        results["resaved"] = outputs(resaved)
        try:
            pipeline(task, model=root + "/ea_dc")
        except ValueError as error:
            assert "trust_remote_code" in str(error), error
        else:
            raise AssertionError("loaded a custom pipeline without trust_remote_code")
        with open(root + "/remote.json", "w") as f:
            json.dump(results, f)
        """,
        tmp_path,
    )
    remote = json.loads((tmp_path / "remote.json").read_text())
    assert sorted(remote) == ["ea_dc", "resaved", "via_save_pretrained"]
    for name, outputs in remote.items():
        assert outputs.keys() == expected.keys()
        for key, records in outputs.items():
            assert labels_of(records) == labels_of(expected[key]), (name, key)  # the same labels, in the same nesting
            difference = np.abs(np.array(scores_of(records)) - np.array(scores_of(expected[key]))).max()
            assert difference <= TOLERANCE, (name, key, difference)


def labels_of(output):
    """The pipeline's output with each {"label", "score"} dict replaced by its label (the nesting kept)."""
    return [labels_of(item) if isinstance(item, list) else item["label"] for item in output]


def scores_of(output) -> list[float]:
    return [s for item in output for s in (scores_of(item) if isinstance(item, list) else [item["score"]])]
