"""Retrieval-augmented generation: the query pipeline, answer generators and synthetic training data."""
