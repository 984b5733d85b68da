"""Tell a local model path from a Hub id before anything loads, so that a mistyped folder gives one clear error
instead of transformers' `HFValidationError` (absolute paths) or a minute of Hub retries (relative ones)."""

import os


HUB_ID_HINT = "a Hub id looks like org/name (e.g. google-bert/bert-base-uncased)"
LISTED_FOLDERS = 8  # at most this many neighbours are named in the error


def is_local_path(name_or_path: str | os.PathLike) -> bool:
    """Whether `name_or_path` names a local path rather than a Hub id: a path object, or a string that is absolute,
    starts with `.` or `~`, has a backslash or more than one `/`, or whose first component is a local folder
    (`checkpoints/ea-minilm` where `checkpoints/` exists)."""
    if not isinstance(name_or_path, str):
        return True
    first = name_or_path.split("/")[0]
    return (
        os.path.isabs(name_or_path)
        or name_or_path.startswith((".", "~"))
        or "\\" in name_or_path
        or name_or_path.count("/") > 1
        or os.path.isdir(first)
    )


def check_model_source(name_or_path: str | os.PathLike, what: str = "--model_name_or_path") -> str:
    """`name_or_path` as `from_pretrained` takes it (`~` expanded), after checking that a local path (see
    `is_local_path`) exists; a Hub id is returned as it is, for the Hub code to resolve. `what` names the source in
    the error (an option, an argument). Raises a `FileNotFoundError` that names the missing folder, what its nearest
    existing parent holds, and what a Hub id looks like."""
    if not is_local_path(name_or_path):
        return name_or_path
    path = os.path.expanduser(os.fspath(name_or_path))
    if os.path.exists(path):
        return path
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    folders = sorted(entry.name for entry in os.scandir(parent) if entry.is_dir() and not entry.name.startswith("."))
    listed = ", ".join(folders[:LISTED_FOLDERS]) + (", ..." if len(folders) > LISTED_FOLDERS else "")
    holds = f"{parent} holds {listed}" if folders else f"{parent} holds no folders"
    raise FileNotFoundError(
        f"{what} {os.fspath(name_or_path)}: no such folder ({os.path.abspath(path)}; {holds}). Check the path; "
        f"{HUB_ID_HINT}."
    )


__all__ = ["check_model_source", "is_local_path"]
