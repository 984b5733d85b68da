#!/usr/bin/env python
"""Verify a checkpoint folder, then publish it as a Hugging Face Hub model repository.

    python -m scripts.release.push_to_hub checkpoints/ea-minilm-l6-rotten-tomatoes --repo-id ORG/NAME [--private]
        [--revision BRANCH] [--commit-message MSG] [--dry-run]

Verification, before anything is uploaded (a folder that fails any check is refused, exit status 1):

1. files: `config.json` with an `auto_map`, every code file that `auto_map` and `custom_pipelines` name,
   `model.safetensors`, `README.md`, and a tokenizer or image processor where the model takes text or images;
2. the card's metadata: `library_name: transformers`, a `pipeline_tag`, the tags `evolving-attention` and
   `custom_code`, `license`, `datasets`, `metrics`, a `model-index` with results, `widget` examples; the widget's
   repository files (`src: https://huggingface.co/<repo>/resolve/main/<file>`) must be in the folder and point at
   `--repo-id`;
3. remote code: in a fresh interpreter where `ea_hf` cannot be imported (offline, empty cache), `pipeline(
   pipeline_tag, model=FOLDER, trust_remote_code=True)` loads and runs every widget example, and gives the outputs the
   card shows (labels equal, scores within 0.005; translations equal).

Then it creates the repository (if needed) and uploads the folder with `HfApi.upload_folder`. The token comes from
`--token`, else `HF_TOKEN` or the `hf auth login` cache. `--dry-run` verifies and prints what would be uploaded.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from huggingface_hub import HfApi, ModelCard


REQUIRED_TAGS = ("evolving-attention", "custom_code")
SCORE_TOLERANCE = 0.005
# The processor each model type needs (time-series models take arrays: none).
PROCESSOR_FILES = {
    "ea_bert": "tokenizer_config.json",
    "ea_t5": "tokenizer_config.json",
    "ea_marian": "tokenizer_config.json",
    "ea_vit": "preprocessor_config.json",
}
WIDGET_FILE = re.compile(r"^https://huggingface\.co/(?P<repo>[^/]+/[^/]+)/resolve/[^/]+/(?P<path>.+)$")

# Makes `import ea_hf` fail in the interpreter that runs the remote-code check.
BLOCK_EA_HF = textwrap.dedent(
    """
    import importlib.abc, sys
    class _BlockEAHF(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "ea_hf" or name.startswith("ea_hf."):
                raise ImportError("ea_hf is blocked: this process must load remote code")
    sys.meta_path.insert(0, _BlockEAHF())
    """
)

# Runs in that interpreter: argv = folder, task, JSON list of inputs; prints a JSON list of outputs.
RUN_PIPELINE = textwrap.dedent(
    """
    import json, sys
    from transformers import pipeline
    folder, task, inputs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    pipe = pipeline(task, model=folder, trust_remote_code=True, device="cpu")
    outputs = []
    for item in inputs:
        if task == "feature-extraction":
            features = pipe(item)
            outputs.append({"shape": [len(features), len(features[0]), len(features[0][0])]})
        elif task == "translation":
            outputs.append({"text": pipe(item)[0]["translation_text"]})
        else:
            outputs.append(pipe(item, top_k=3))
    print("OUTPUTS " + json.dumps(outputs))
    """
)


class VerificationError(Exception):
    """The folder is not ready for the Hub; the message lists every problem found."""


def check_files(folder: Path) -> tuple[dict, list[str]]:
    """The folder's config and the problems found in its files."""
    problems = []
    for name in ("config.json", "model.safetensors", "README.md"):
        if not (folder / name).is_file():
            problems.append(f"{name} is missing")
    if not (folder / "config.json").is_file():
        return {}, problems
    config = json.loads((folder / "config.json").read_text())
    auto_map = config.get("auto_map")
    if not auto_map:
        problems.append("config.json has no auto_map: the model cannot load without ea_hf")
    references = list((auto_map or {}).values())
    references += [entry.get("impl", "") for entry in config.get("custom_pipelines", {}).values()]
    for reference in references:
        module = reference.split("--")[-1].rsplit(".", 1)[0]
        if not (folder / f"{module}.py").is_file():
            problems.append(f"{module}.py is missing (named in config.json: {reference})")
    processor_file = PROCESSOR_FILES.get(config.get("model_type"))
    if processor_file and not (folder / processor_file).is_file():
        problems.append(f"{processor_file} is missing: the pipeline needs the model's processor")
    return config, problems


def check_card(folder: Path, repo_id: str) -> tuple[dict, list[tuple[str, object]], list[str]]:
    """The card's metadata, its widget examples as (pipeline input, expected output) and the problems found."""
    if not (folder / "README.md").is_file():
        return {}, [], []
    data = ModelCard.load(folder / "README.md").data.to_dict()
    problems = []
    if data.get("library_name") != "transformers":
        problems.append(f"library_name is {data.get('library_name')!r}, not 'transformers'")
    for key in ("pipeline_tag", "license", "datasets", "metrics", "model-index", "widget"):
        if not data.get(key):
            problems.append(f"the card has no {key}")
    missing_tags = [tag for tag in REQUIRED_TAGS if tag not in (data.get("tags") or [])]
    if missing_tags:
        problems.append(f"the card's tags lack {missing_tags}")
    results = [result for entry in data.get("model-index") or [] for result in entry.get("results", [])]
    if data.get("model-index") and not any(
        metric.get("value") is not None for r in results for metric in r["metrics"]
    ):
        problems.append("the model-index holds no measured value")
    examples = []
    for example in data.get("widget") or []:
        if "text" in example:
            examples.append((example["text"], example.get("output")))
            continue
        match = WIDGET_FILE.match(str(example.get("src", "")))
        if match is None:
            problems.append(f"widget example {example} has neither text nor a file of the repository")
            continue
        if match["repo"] != repo_id:
            problems.append(
                f"widget file {example['src']} points at {match['repo']}, not {repo_id}: rebuild the card for this "
                f"repository (build_checkpoints.py NAME --force --hub_org {repo_id.split('/')[0]})"
            )
        path = folder / match["path"]
        if not path.is_file():
            problems.append(f"widget file {match['path']} is not in the folder")
        examples.append((str(path.resolve()), example.get("output")))  # the check runs in another folder
    return data, examples, problems


def run_remote_code(folder: Path, task: str, inputs: list) -> list:
    """The pipeline's outputs on `inputs`, from a fresh interpreter where ea_hf cannot be imported."""
    with tempfile.TemporaryDirectory() as home:
        env = {"HF_HUB_OFFLINE": "1", "HF_HOME": home, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        env.update({key: os.environ[key] for key in ("OMP_NUM_THREADS",) if key in os.environ})
        result = subprocess.run(
            [sys.executable, "-c", BLOCK_EA_HF + RUN_PIPELINE, str(folder.resolve()), task, json.dumps(inputs)],
            capture_output=True,
            text=True,
            env=env,
            cwd=home,
        )
    if result.returncode != 0:
        raise VerificationError(
            f"pipeline({task!r}, trust_remote_code=True) fails without ea_hf:\n{result.stderr[-3000:]}"
        )
    line = next(line for line in result.stdout.splitlines() if line.startswith("OUTPUTS "))
    return json.loads(line.removeprefix("OUTPUTS "))


def compare(expected, got, config: dict) -> str | None:
    """Why `got` differs from the card's `expected` output, or None when it matches."""
    if isinstance(got, dict) and "shape" in got:  # feature extraction: [1, tokens, hidden]
        hidden = config.get("hidden_size")
        return None if got["shape"][-1] == hidden else f"feature size {got['shape'][-1]}, config says {hidden}"
    if expected is None:
        return None
    if isinstance(expected, dict):
        return None if expected == got else f"card says {expected}, the model gives {got}"
    for want, have in zip(expected, got, strict=False):
        if want["label"] != have["label"] or abs(want["score"] - have["score"]) > SCORE_TOLERANCE:
            return f"card says {expected}, the model gives {[(o['label'], round(o['score'], 4)) for o in got]}"
    return None


def verify(folder: str | Path, repo_id: str) -> dict:
    """Every check of the module docstring; raises `VerificationError` listing the problems. Returns the card
    metadata."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VerificationError(f"{folder} is not a folder")
    config, problems = check_files(folder)
    data, examples, card_problems = check_card(folder, repo_id)
    problems += card_problems
    if problems:
        raise VerificationError(f"{folder} is not ready for {repo_id}:\n- " + "\n- ".join(problems))
    outputs = run_remote_code(folder, data["pipeline_tag"], [example for example, _ in examples])
    for (example, expected), got in zip(examples, outputs, strict=True):
        difference = compare(expected, got, config)
        if difference:
            problems.append(f"widget example {example}: {difference}")
    if problems:
        raise VerificationError(f"{folder}: the remote code does not reproduce the card:\n- " + "\n- ".join(problems))
    print(f"Verified {folder}: files, card metadata, and {len(examples)} widget examples run without ea_hf.")
    return data


def main(argv=None) -> str | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a checkpoint folder (e.g. from build_checkpoints.py)")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", default=None, help="branch to upload to (created if needed; default: main)")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--token", default=None, help="default: HF_TOKEN or the `hf auth login` cache")
    parser.add_argument("--dry-run", action="store_true", help="verify and list the files; upload nothing")
    args = parser.parse_args(argv)
    if args.repo_id.count("/") != 1:
        parser.error(f"--repo-id must be ORG/NAME, got {args.repo_id!r}")
    try:
        verify(args.folder, args.repo_id)
    except VerificationError as error:
        print(f"Refusing to upload: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    files = sorted(path for path in args.folder.rglob("*") if path.is_file())
    size = sum(path.stat().st_size for path in files)
    if args.dry_run:
        print(f"Dry run: would upload {len(files)} files ({size / 1e6:.1f} MB) to {args.repo_id}:")
        for path in files:
            print(f"  {path.relative_to(args.folder)}  ({path.stat().st_size:,} bytes)")
        return None
    api = HfApi(token=args.token)
    repo = api.create_repo(args.repo_id, private=args.private, exist_ok=True)
    if args.revision not in (None, "main"):
        api.create_branch(args.repo_id, branch=args.revision, exist_ok=True)
    commit = api.upload_folder(
        folder_path=args.folder,
        repo_id=args.repo_id,
        revision=args.revision,
        commit_message=args.commit_message or f"Upload {args.folder.name} ({len(files)} files)",
    )
    print(f"Uploaded {len(files)} files ({size / 1e6:.1f} MB) to {repo}: {commit}")
    return str(commit)


if __name__ == "__main__":
    main()
