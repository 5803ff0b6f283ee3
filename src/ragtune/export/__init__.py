"""Artifacts for serving stacks: merged models (transformers, vLLM) and LangChain-loadable indexes."""
