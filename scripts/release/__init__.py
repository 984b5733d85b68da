"""Release tooling: build the pretrained EA checkpoints and their twins, write their model cards, publish them."""
