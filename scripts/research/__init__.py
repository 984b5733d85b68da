"""Research tooling: the evidence study of EA against its vanilla twins."""
