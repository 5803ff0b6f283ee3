"""Model resolution (hub id, local path, packaged offline copy), device and precision."""
