"""ea-hf's example scripts: each runs as a file and imports only installed packages."""
