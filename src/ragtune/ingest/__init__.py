"""Ingestion, the lowest data layer: read records and documents from files, find them in folders, and chunk them."""
