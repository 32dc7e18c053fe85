"""Measuring adapters: sampling scene prompts with and without them, and the leakage metrics (see docs/eval.md)."""
