"""A persistent, updatable retrieval index: FAISS + BM25 + chunk texts in SQLite + a manifest, in atomic versions.

store.py holds the layout, versions, lock and manifest; reader.py opens an index for queries; update.py builds,
adds and deletes.
"""

from ragtune.index.reader import Index
from ragtune.index.store import is_index
from ragtune.index.update import ChangeReport, add_to_index, build_index, delete_from_index

__all__ = ["ChangeReport", "Index", "add_to_index", "build_index", "delete_from_index", "is_index"]
