"""ea-hf's tooling packages (run from the repository root: `python -m scripts.release.build_checkpoints`); the user
examples in `scripts/examples/` run as files and import only installed packages."""
