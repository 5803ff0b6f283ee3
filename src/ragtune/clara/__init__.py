"""CLaRa (issue 20): a RAG generator that reads documents compressed into memory-token vectors (model.py) and, in
stage 3, picks them with a differentiable top-k (topk.py)."""
