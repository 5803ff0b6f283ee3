"""ragtune: fine-tune, evaluate and ship every model in a RAG stack."""

__version__ = "0.1.0"
