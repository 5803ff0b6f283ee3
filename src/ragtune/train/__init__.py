"""Training recipes: thin layers over the HF / sentence-transformers trainers."""
