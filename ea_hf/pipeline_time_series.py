"""A `time-series-classification` pipeline for models that take `past_values` [B, T, C] and `attention_mask` [B, T]
and classify into `config.id2label` (EA-DC-Transformer, the TST baseline).

- in-process: importing ea_hf registers it, after which `pipeline("time-series-classification", model=model)`
  works;
- as remote code: `ea_hf.save_time_series_pipeline(model, folder)` (or `pipe.save_pretrained(folder)`) writes the
  model, this file and `custom_pipelines` in config.json, so that
  `pipeline("time-series-classification", model=folder, trust_remote_code=True)` works where ea_hf is not installed.

This module is copied into saved folders as remote code: it must import only the standard library, numpy, torch and
transformers (no package imports, absolute or relative).
"""

import csv
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, Pipeline
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator


TASK = "time-series-classification"
PIPELINE_TYPE = "time-series"
AUTO_MODEL_CLASS = AutoModelForSequenceClassification
# CSV fields read as a missing value (case-insensitive); `?` is the UEA `.ts` spelling
MISSING_FIELDS = {"", "?", "nan", "na", "n/a", "null", "none"}


def _parse_field(field: str) -> float | None:
    """A CSV field as a float (NaN for a missing value), or None if it is not a number."""
    field = field.strip()
    if field.lower() in MISSING_FIELDS:
        return math.nan
    try:
        return float(field)
    except ValueError:
        return None


def read_csv_series(path: str | os.PathLike) -> np.ndarray:
    """Read one series from a CSV file: one row per time step, one comma-separated column per channel; empty fields,
    `?`, `nan`, `NA` are missing values (NaN). A first line that is not all numbers is a header and skipped; blank
    lines are skipped. Returns float32 [T, C]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such CSV file: {path} (a string input is read as the path of a CSV file).")
    rows = []
    with open(path, newline="", encoding="utf-8") as file:
        for line_number, fields in enumerate(csv.reader(file), start=1):
            if not fields or all(not field.strip() for field in fields):
                continue
            values = [_parse_field(field) for field in fields]
            if None in values:
                if not rows and line_number == 1:  # a header line
                    continue
                bad = fields[values.index(None)].strip()
                raise ValueError(f"{path}, line {line_number}: {bad!r} is not a number (or empty for missing).")
            if rows and len(values) != len(rows[0]):
                raise ValueError(
                    f"{path}, line {line_number}: {len(values)} columns, but the first data line has {len(rows[0])}."
                )
            rows.append(values)
    if not rows:
        raise ValueError(f"{path} has no data lines.")
    return np.asarray(rows, dtype=np.float32)


def _is_single_series(inputs) -> bool:
    """Whether `inputs` is one series (array [T, C], nested list [T][C], CSV path) rather than several (a list, or a
    generator / dataset of series)."""
    if isinstance(inputs, (str, os.PathLike, np.ndarray, torch.Tensor)):
        return True
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise ValueError("The pipeline got an empty list: pass at least one series.")
        first = inputs[0]
        if isinstance(first, (str, os.PathLike, np.ndarray, torch.Tensor)):
            return False
        if isinstance(first, (list, tuple)):  # [T][C] numbers: one series; [N][T][C]: a list of series
            return not (first and isinstance(first[0], (list, tuple, np.ndarray, torch.Tensor)))
        return True  # a flat list of numbers: one (1-D) series, refused as such in `to_series`
    if hasattr(inputs, "__iter__") or hasattr(inputs, "__getitem__"):
        return False
    raise TypeError(
        "The pipeline takes a series (array or nested list [time steps, channels], or a CSV path) or a list of "
        f"them, got {type(inputs).__name__}."
    )


class TimeSeriesClassificationPipeline(Pipeline):
    """Classify time series with a model that takes `past_values` [B, T, C] and `attention_mask` [B, T] and returns
    `logits` [B, num_labels] (EA-DC-Transformer, TST; loaded with `AutoModelForSequenceClassification`).

    ```python
    >>> classifier = pipeline("time-series-classification", model=folder, trust_remote_code=True)
    >>> classifier(series)  # [T, C]
    [{'label': 'walking', 'score': 0.93}]
    >>> classifier([series, shorter_series], top_k=2, batch_size=2)
    [[{'label': 'walking', 'score': 0.93}, {'label': 'running', 'score': 0.05}], [...]]
    ```

    Input: one series, a numpy array / tensor / nested list [T, C] (time steps x channels, NaN or None = missing),
    or the path (str or Path) of a CSV file with one row per time step and one column per channel (see
    `read_csv_series`); or a list of such series, which may differ in length. A univariate series is [T, 1].

    Each series is standardised with `model.config.standardizer` (`{"mean": [C], "std": [C]}`, as `run_uea.py` saves
    it) when the config has one, its missing values then set to 0 (the channel's mean) with the attention mask still 1
    there, as `ea_hf.time_series.pad_batch` does; series of a batch are padded at the end with mask 0.

    Output: for one series, a list of `{"label", "score"}` dicts sorted by score, highest first; for a list of
    series, one such list per series. `top_k` (default 1, call or init parameter): how many labels to return, `None`
    for all. Unlike text-classification, a list input always gives a list of lists (also without `top_k`). Scores are
    the softmax of the logits (a sigmoid where the model has a single label or `problem_type` is
    "multi_label_classification"). `batch_size` > 1 runs that many series at once, padded. A model passed in is used
    as it is: put one you trained in eval mode first (`from_pretrained` does).

    Errors (ValueError unless said otherwise): input that is not 2-D, a channel count other than
    `config.num_channels`, a series longer than `config.context_length`, an empty or all-missing series, a non-finite
    value other than NaN; FileNotFoundError for a path that is not a file.
    """

    _load_tokenizer = False
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    # Set by `ea_hf.custom_pipelines.register_pipeline` where ea_hf is installed; None in a remote copy.
    _save_pipeline = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config = self.model.config
        if getattr(config, "problem_type", None) == "regression":
            raise ValueError(f"{type(self.model).__name__} is a regression model; this pipeline classifies.")
        if not getattr(config, "id2label", None):
            raise ValueError("TimeSeriesClassificationPipeline needs a model config with `id2label`.")
        self.num_channels = getattr(config, "num_channels", None)
        self.max_length = getattr(config, "context_length", None)
        self.mean = self.std = None
        standardizer = getattr(config, "standardizer", None)
        if standardizer is not None:
            self.mean = np.asarray(standardizer["mean"], dtype=np.float64)
            self.std = np.asarray(standardizer["std"], dtype=np.float64)
            if self.mean.shape != self.std.shape or self.mean.ndim != 1:
                raise ValueError(f"config.standardizer needs `mean` and `std` of one length, got {standardizer}.")
            if self.num_channels is not None and len(self.mean) != self.num_channels:
                raise ValueError(
                    f"config.standardizer has {len(self.mean)} channels, config.num_channels is {self.num_channels}."
                )
            if not (np.isfinite(self.std).all() and (self.std > 0).all()):
                raise ValueError(f"config.standardizer has a std that is not positive: {self.std.tolist()}.")

    def _sanitize_parameters(self, top_k="", **kwargs):
        if kwargs:
            raise TypeError(f"TimeSeriesClassificationPipeline got unexpected parameters: {sorted(kwargs)}")
        postprocess_params = {}
        if top_k != "":  # "" = not given; None = every label
            if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
                raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}.")
            postprocess_params["top_k"] = top_k
        return {}, {}, postprocess_params

    def __call__(self, inputs, **kwargs):
        """Classify one series or a list of series (see the class docstring); `top_k`, `batch_size` as parameters."""
        if _is_single_series(inputs):
            return super().__call__(self.to_series(inputs), **kwargs)
        if not isinstance(inputs, (list, tuple)):  # a generator or dataset: checked one by one in `preprocess`
            return super().__call__(inputs, **kwargs)
        series = []
        for i, item in enumerate(inputs):
            try:
                series.append(self.to_series(item))
            except (ValueError, TypeError, FileNotFoundError) as error:
                raise type(error)(f"Series {i}: {error}") from error
        return super().__call__(series, **kwargs)

    def to_series(self, series) -> np.ndarray:
        """One input series (array, tensor, nested list [T, C], or CSV path) as a checked float32 array [T, C], NaN
        for missing values; not standardised."""
        if isinstance(series, (str, os.PathLike)):
            series = read_csv_series(series)
        elif isinstance(series, torch.Tensor):
            series = series.detach().cpu().float().numpy()
        try:
            array = np.asarray(series, dtype=np.float32)
        except (ValueError, TypeError) as error:
            raise ValueError(f"A series must be numbers of shape [time steps, channels]: {error}") from None
        if array.ndim != 2:
            hint = ""
            if array.ndim in (1, 3):
                hint = " (a univariate series is [T, 1]; a batch is a list of [T, C] series)"
            raise ValueError(f"A series must be 2-D [time steps, channels], got shape {array.shape}{hint}.")
        length, channels = array.shape
        if self.num_channels is not None and channels != self.num_channels:
            raise ValueError(
                f"The series has {channels} channels (shape {array.shape}), the model takes {self.num_channels} "
                "(columns = channels, rows = time steps)."
            )
        if length == 0:
            raise ValueError("The series has no time steps.")
        if self.max_length is not None and length > self.max_length:
            raise ValueError(
                f"The series has {length} time steps, more than the model's context_length = {self.max_length}."
            )
        missing = np.isnan(array)
        if missing.all():
            raise ValueError(f"Every value of the series (shape {array.shape}) is missing (NaN).")
        if not np.isfinite(array[~missing]).all():
            raise ValueError("The series holds inf: only finite values and NaN (missing) are allowed.")
        return array

    def preprocess(self, series) -> dict[str, torch.Tensor]:
        """series [T, C] -> `past_values` [1, T, C] float32 standardised with missing values 0, `attention_mask`
        [1, T] ones."""
        array = self.to_series(series)
        if self.mean is not None:
            array = ((array - self.mean) / self.std).astype(np.float32)
        values = torch.from_numpy(np.where(np.isnan(array), np.float32(0), array))
        return {"past_values": values[None], "attention_mask": torch.ones(1, len(array), dtype=torch.long)}

    @staticmethod
    def pad_collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Stack preprocessed series into `past_values` [B, T, C] and `attention_mask` [B, T], T the longest,
        zeros at the padding (at the end)."""
        length = max(item["past_values"].shape[1] for item in items)
        channels = items[0]["past_values"].shape[2]
        values = torch.zeros(len(items), length, channels, dtype=items[0]["past_values"].dtype)
        attention_mask = torch.zeros(len(items), length, dtype=torch.long)
        for i, item in enumerate(items):
            values[i, : item["past_values"].shape[1]] = item["past_values"][0]
            attention_mask[i, : item["attention_mask"].shape[1]] = item["attention_mask"][0]
        return {"past_values": values, "attention_mask": attention_mask}

    def get_iterator(
        self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params, postprocess_params
    ):
        # transformers' own collate pads only with a tokenizer or feature extractor: series are padded here
        if batch_size == 1:
            return super().get_iterator(
                inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params
            )
        if isinstance(inputs, (list, tuple)):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
            num_workers = min(num_workers, 1)
        dataloader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=self.pad_collate)
        model_iterator = PipelineIterator(dataloader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def _forward(self, model_inputs):
        return {"logits": self.model(**model_inputs).logits}

    def postprocess(self, model_outputs, top_k=1) -> list[dict[str, Any]]:
        """logits [1, num_labels] -> the `top_k` (None: all) `{"label", "score"}` dicts, highest score first."""
        config = self.model.config
        logits = model_outputs["logits"][0].float()
        if config.num_labels == 1 or getattr(config, "problem_type", None) == "multi_label_classification":
            scores = torch.sigmoid(logits)
        else:
            scores = torch.softmax(logits, dim=-1)
        records = [{"label": config.id2label[i], "score": score.item()} for i, score in enumerate(scores)]
        records.sort(key=lambda record: record["score"], reverse=True)
        return records if top_k is None else records[:top_k]

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any):
        """Save the model and this pipeline's code, so that the folder loads with
        `pipeline("time-series-classification", model=save_directory, trust_remote_code=True)`.

        Where ea_hf is installed this is `ea_hf.save_time_series_pipeline`; a remote copy saves with transformers' own
        code for registered custom pipelines (the config's `custom_pipelines` is set for the save only)."""
        if self._save_pipeline is not None:
            self._save_pipeline(type(self), self.model, None, save_directory, **kwargs)
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


__all__ = ["TimeSeriesClassificationPipeline", "read_csv_series"]
