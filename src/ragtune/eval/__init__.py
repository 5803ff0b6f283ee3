"""Evaluation: IR metrics, retrieval pipelines side by side, before/after reports."""
