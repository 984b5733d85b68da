"""The UEA/UCR `.ts` time series format (https://www.timeseriesclassification.com): read, write, standardise,
split and pad.

A case is a float32 array [length, channels] with NaN for missing values; cases may differ in length. aeon is never
imported: `load_uea` only reads the plain-text `.ts` files it bundles.
"""

import importlib.util
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch


AEON_HINT = (
    "Install the bundled files with `pip install --no-deps aeon==1.6.0`, or pass `data_dir`, a folder of `.ts` files "
    "from https://www.timeseriesclassification.com."
)
# Header tags are case-insensitive in the wild (`@timestamps`, `@targetlabel`); metadata uses these spellings.
HEADER_TAGS = {
    tag.lower(): tag
    for tag in (
        "problemName",
        "timeStamps",
        "missing",
        "univariate",
        "dimensions",
        "equalLength",
        "seriesLength",
        "classLabel",
        "targetLabel",
    )
}
BOOLEAN_TAGS = {"timeStamps", "missing", "univariate", "equalLength", "classLabel", "targetLabel"}
INTEGER_TAGS = {"dimensions", "seriesLength"}


@dataclass
class TimeSeriesDataset:
    """Cases of a `.ts` file.

    `series`: one float32 array [length_i, channels] per case, NaN for missing values.
    `labels`: int64 class indices [N] into `class_names` (classification), float32 targets [N] or [N, targets]
    (regression), or None (unlabelled).
    `class_names`: the class labels in index order, None unless classification.
    `metadata`: the header fields (`problemName`, `timeStamps`, `missing`, `univariate`, `equalLength`,
    `seriesLength`, `classLabel`, `targetLabel`, ...).
    """

    series: list[np.ndarray]
    labels: np.ndarray | None
    class_names: list[str] | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.series = [np.asarray(case, dtype=np.float32) for case in self.series]
        if not self.series:
            raise ValueError("A TimeSeriesDataset needs at least one case.")
        channels = {case.shape[1] if case.ndim == 2 else None for case in self.series}
        if len(channels) != 1 or None in channels:
            raise ValueError(f"Every case must be an array [length, channels] with one channel count; got {channels}.")
        if self.labels is not None and len(self.labels) != len(self.series):
            raise ValueError(f"{len(self.series)} cases but {len(self.labels)} labels.")

    def __len__(self) -> int:
        return len(self.series)

    @property
    def num_channels(self) -> int:
        return self.series[0].shape[1]

    @property
    def max_length(self) -> int:
        return max(len(case) for case in self.series)

    @property
    def is_classification(self) -> bool:
        return self.class_names is not None

    def subset(self, indices) -> "TimeSeriesDataset":
        """The cases at `indices`, with the same class names and a copy of the metadata."""
        labels = None if self.labels is None else self.labels[indices]
        return replace(self, series=[self.series[i] for i in indices], labels=labels, metadata=dict(self.metadata))


def _header_value(tag: str, value: str, where: str):
    if tag in BOOLEAN_TAGS:
        if value.lower() not in ("true", "false"):
            raise ValueError(f"{where}: @{tag} must be true or false, got {value!r}.")
        return value.lower() == "true"
    if tag in INTEGER_TAGS:
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{where}: @{tag} must be an integer, got {value!r}.") from None
    return value


def _parse_dimension(text: str, where: str) -> np.ndarray:
    try:
        return np.array([math.nan if v.strip() == "?" else float(v) for v in text.split(",")], dtype=np.float32)
    except ValueError:
        bad = next(v for v in text.split(",") if v.strip() != "?" and not _is_number(v))
        raise ValueError(f"{where}: {bad.strip()!r} is not a number (or `?` for a missing value).") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_header(lines: list[tuple[int, str]], path: Path) -> tuple[dict, list[str] | None, int]:
    """Parse the header lines up to `@data`: (metadata, the @classLabel classes or None, index of the first case)."""
    metadata, declared_classes = {}, None
    for i, (line_number, line) in enumerate(lines):
        where = f"{path}, line {line_number}"
        if not line.startswith("@"):
            raise ValueError(f"{where}: a case before @data (or a header line without `@`).")
        tag, value = (line[1:].split(maxsplit=1) + [""])[:2]
        tag = HEADER_TAGS.get(tag.lower(), tag)
        if tag.lower() == "data":
            if metadata.get("classLabel") and metadata.get("targetLabel"):
                raise ValueError(f"{where}: a file cannot have both @classLabel true and @targetLabel true.")
            if metadata.get("timeStamps"):
                raise NotImplementedError(f"{path}: @timeStamps true (time-stamped values) is not supported.")
            return metadata, declared_classes, i + 1
        if tag == "classLabel":
            flag, *classes = value.split() or [""]
            metadata[tag] = _header_value(tag, flag, where)
            if metadata[tag] and not classes:
                raise ValueError(f"{where}: @classLabel true must list the class labels.")
            if len(set(classes)) != len(classes):
                raise ValueError(f"{where}: @classLabel lists a class twice: {classes}.")
            declared_classes = classes if metadata[tag] else None
        else:
            metadata[tag] = _header_value(tag, value.strip(), where)
    raise ValueError(f"{path}: no @data line.")


def _parse_case(fields: list[str], dimensions: int, where: str) -> np.ndarray:
    """One case's dimensions (`v,v,?,v` each) as [length, dimensions], shorter dimensions NaN-padded at the end."""
    if len(fields) != dimensions:
        raise ValueError(f"{where}: expected {dimensions} dimensions, found {len(fields)}.")
    columns = [_parse_dimension(text, f"{where}, dimension {d}") for d, text in enumerate(fields)]
    case = np.full((max(len(column) for column in columns), dimensions), np.nan, dtype=np.float32)
    for d, column in enumerate(columns):
        case[: len(column), d] = column
    return case


def read_ts(path: str | Path, class_names: list[str] | None = None) -> TimeSeriesDataset:
    """Read a `.ts` file. Dimensions of one case may differ in length: the shorter ones are padded at the end with
    NaN to the case's longest. `class_names` (e.g. the TRAIN file's) fixes the class order, so TRAIN and TEST share
    label indices; a label outside it is a ValueError."""
    path = Path(path)
    with open(path, encoding="utf-8", errors="replace") as file:
        lines = [(number, line.strip()) for number, line in enumerate(file, start=1)]
    # `#` comments; `%` (ARFF-style) comments appear in aeon's UnitTest files.
    lines = [(number, line) for number, line in lines if line and not line.startswith(("#", "%"))]
    metadata, declared_classes, first_case = _read_header(lines, path)
    if first_case == len(lines):
        raise ValueError(f"{path}: no cases after @data.")
    classification, regression = metadata.get("classLabel", False), metadata.get("targetLabel", False)
    dimensions = metadata.get("dimensions", 1 if metadata.get("univariate") else None)
    series, raw_labels = [], []
    for line_number, line in lines[first_case:]:
        where = f"{path}, line {line_number}"
        fields = line.split(":")
        if classification or regression:
            *fields, label = fields
            raw_labels.append((label.strip(), where))
        dimensions = dimensions or len(fields)
        series.append(_parse_case(fields, dimensions, where))

    if classification:
        class_names = declared_classes if class_names is None else list(class_names)
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names lists a class twice: {class_names}.")
        index = {name: i for i, name in enumerate(class_names)}
        for label, where in raw_labels:
            if label not in declared_classes:
                raise ValueError(f"{where}: class label {label!r} is not declared in @classLabel {declared_classes}.")
            if label not in index:
                raise ValueError(f"{where}: class label {label!r} is not in the given class_names {class_names}.")
        labels = np.array([index[label] for label, _ in raw_labels], dtype=np.int64)
    elif class_names is not None:
        raise ValueError(f"{path}: class_names given, but the file has no @classLabel true.")
    elif regression:
        for label, where in raw_labels:
            if not _is_number(label):
                raise ValueError(f"{where}: regression target {label!r} is not a number.")
        labels = np.array([float(label) for label, _ in raw_labels], dtype=np.float32)
    else:
        labels = None
    return TimeSeriesDataset(series, labels, class_names, metadata)


def write_ts(dataset: TimeSeriesDataset, path: str | Path, problem_name: str) -> None:
    """Write `dataset` as a `.ts` file, NaN as `?` (a padded dimension is written with its trailing `?`)."""
    classification = dataset.is_classification
    regression = not classification and dataset.labels is not None
    if regression and dataset.labels.ndim != 1:
        raise ValueError(f".ts holds one regression target per case; labels have shape {dataset.labels.shape}.")
    if classification and any(not name or any(c.isspace() or c == ":" for c in name) for name in dataset.class_names):
        raise ValueError(f"A .ts class name cannot be empty or hold spaces or `:`: {dataset.class_names}.")
    lengths = {len(case) for case in dataset.series}
    header = [
        f"@problemName {problem_name}",
        "@timeStamps false",
        f"@missing {str(any(np.isnan(case).any() for case in dataset.series)).lower()}",
        f"@univariate {str(dataset.num_channels == 1).lower()}",
        f"@dimensions {dataset.num_channels}",
        f"@equalLength {str(len(lengths) == 1).lower()}",
    ]
    if len(lengths) == 1:
        header.append(f"@seriesLength {lengths.pop()}")
    header.append("@classLabel " + " ".join(["true", *dataset.class_names]) if classification else "@classLabel false")
    if regression:
        header.append("@targetLabel true")
    header.append("@data")

    lines = []
    for i, case in enumerate(dataset.series):
        fields = [",".join("?" if np.isnan(v) else str(v) for v in column) for column in case.T]
        if classification:
            fields.append(dataset.class_names[dataset.labels[i]])
        elif regression:
            fields.append(str(dataset.labels[i]))
        lines.append(":".join(fields))
    Path(path).write_text("\n".join(header + lines) + "\n", encoding="utf-8")


def bundled_uea_dir() -> Path:
    """The folder of `.ts` files inside the installed aeon package, found without importing aeon."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"aeon is not installed, so there are no bundled UEA files. {AEON_HINT}")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def load_uea(
    name: str, data_dir: str | Path | None = None, split: str = "TRAIN", class_names: list[str] | None = None
) -> TimeSeriesDataset:
    """Read `<data_dir>/<name>/<name>_<split>.ts` (or `<data_dir>/<name>_<split>.ts`); `data_dir=None` reads the
    files bundled in aeon (BasicMotions, JapaneseVowels, ...). `class_names`: see `read_ts`."""
    split = split.upper()
    if split not in ("TRAIN", "TEST"):
        raise ValueError(f"split must be TRAIN or TEST, got {split!r}.")
    folder = bundled_uea_dir() if data_dir is None else Path(data_dir)
    candidates = [folder / name / f"{name}_{split}.ts", folder / f"{name}_{split}.ts"]
    for path in candidates:
        if path.is_file():
            return read_ts(path, class_names=class_names)
    raise FileNotFoundError(f"No {name} {split} file: looked for {[str(p) for p in candidates]}. {AEON_HINT}")


@dataclass
class Standardizer:
    """Per-channel standardisation (x - mean) / std, `mean` and `std` [channels] fitted on the training split.
    Missing values stay NaN."""

    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def fit(self, dataset: TimeSeriesDataset) -> "Standardizer":
        """Mean and std (std 0 -> 1) of each channel over all observed (non-NaN) time steps of `dataset`."""
        values = np.concatenate(dataset.series).astype(np.float64)
        empty = np.flatnonzero(np.isnan(values).all(axis=0))
        if len(empty):
            raise ValueError(f"Channels {empty.tolist()} have no observed values; cannot standardise them.")
        self.mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
        self.std = np.where(std > 0, std, 1.0)
        return self

    def transform(self, dataset: TimeSeriesDataset) -> TimeSeriesDataset:
        """A new dataset with every case standardised (float32)."""
        if self.mean is None:
            raise ValueError("Standardizer.transform called before fit (or from_dict).")
        if dataset.num_channels != len(self.mean):
            raise ValueError(f"Fitted on {len(self.mean)} channels, dataset has {dataset.num_channels}.")
        series = [((case - self.mean) / self.std).astype(np.float32) for case in dataset.series]
        return replace(dataset, series=series, metadata=dict(dataset.metadata))

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready `{"mean": [...], "std": [...]}`, e.g. for a model config."""
        if self.mean is None:
            raise ValueError("Standardizer.to_dict called before fit.")
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, state: dict[str, list[float]]) -> "Standardizer":
        return cls(mean=np.asarray(state["mean"], dtype=np.float64), std=np.asarray(state["std"], dtype=np.float64))


def train_validation_split(
    dataset: TimeSeriesDataset, validation_fraction: float, seed: int
) -> tuple[TimeSeriesDataset, TimeSeriesDataset]:
    """Split a TRAIN set into (train, validation), seeded. Classification is stratified: each class with at least
    two cases puts round(fraction * its size), at least one and at most all but one, into validation (a class with
    one case stays in train). Otherwise round(fraction * N) random cases, at least one each side."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}.")
    if len(dataset) < 2:
        raise ValueError("Splitting needs at least two cases.")
    rng = np.random.default_rng(seed)
    if dataset.is_classification:
        groups = [np.flatnonzero(dataset.labels == c) for c in np.unique(dataset.labels)]
    else:
        groups = [np.arange(len(dataset))]
    validation = []
    for group in groups:
        if len(group) >= 2:
            size = min(max(int(validation_fraction * len(group) + 0.5), 1), len(group) - 1)
            validation.extend(rng.permutation(group)[:size].tolist())
    if not validation:
        raise ValueError("No class has two cases, so no validation set can be drawn.")
    is_validation = np.zeros(len(dataset), dtype=bool)
    is_validation[validation] = True
    return dataset.subset(np.flatnonzero(~is_validation)), dataset.subset(np.flatnonzero(is_validation))


def pad_batch(series_list: list[np.ndarray], max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack cases [length_i, channels] into `values` [B, T, C] float32 and `attention_mask` [B, T] long, T =
    `max_length` or the longest case. The mask is 1 at every time step of a case (one whose channels are all
    missing included) and 0 at the padding; missing values and padding are 0 in `values`."""
    if not series_list:
        raise ValueError("pad_batch needs at least one series.")
    channels = {case.shape[1] for case in series_list}
    if len(channels) != 1:
        raise ValueError(f"All series must have the same number of channels, got {sorted(channels)}.")
    longest = max(len(case) for case in series_list)
    max_length = longest if max_length is None else max_length
    if longest > max_length:
        raise ValueError(f"A series has {longest} time steps, more than max_length={max_length}.")
    values = torch.zeros(len(series_list), max_length, channels.pop(), dtype=torch.float32)
    attention_mask = torch.zeros(len(series_list), max_length, dtype=torch.long)
    for i, case in enumerate(series_list):
        case = np.asarray(case, dtype=np.float32)
        values[i, : len(case)] = torch.from_numpy(np.where(np.isnan(case), np.float32(0), case))
        attention_mask[i, : len(case)] = 1
    return values, attention_mask


__all__ = [
    "TimeSeriesDataset",
    "read_ts",
    "write_ts",
    "load_uea",
    "bundled_uea_dir",
    "Standardizer",
    "train_validation_split",
    "pad_batch",
]
