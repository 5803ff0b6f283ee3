"""`ragtune serve`: the tuned stack behind an OpenAI-compatible HTTP API (FastAPI + uvicorn), with metrics."""
