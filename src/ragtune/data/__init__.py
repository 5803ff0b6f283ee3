"""Data formats, detection, validation and splits."""
