"""Adapters for the stacks users already run (LangChain)."""
