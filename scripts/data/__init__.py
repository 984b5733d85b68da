"""Data tooling: the local datasets and the pretrained ViT-S/14 that the training scripts read, built offline."""
