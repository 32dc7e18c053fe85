"""Pieces of the tag stage below stages/tag.py.

store.py    OUT/tags.parquet: stored probabilities per item (reused by re-runs and --rethreshold)
batches.py  the pipelined inference loop: decode in threads while the model runs, one batch shape
"""
