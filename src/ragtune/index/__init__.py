"""A persistent, updatable retrieval index: FAISS + BM25 + chunk texts in SQLite + a manifest, in atomic versions.

store.py holds the layout, versions, lock and manifest; segments.py the segments a version is made of; reader.py
opens an index for queries; update.py builds, adds, deletes and compacts.
"""

from ragtune.index.reader import Index
from ragtune.index.store import is_index
from ragtune.index.update import ChangeReport, add_to_index, build_index, compact_index, delete_from_index

__all__ = ["ChangeReport", "Index", "add_to_index", "build_index", "compact_index", "delete_from_index", "is_index"]
