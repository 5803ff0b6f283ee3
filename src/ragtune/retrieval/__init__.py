"""Retrievers: dense (sentence-transformers + FAISS)."""
