"""Patch and cell embeddings, and the multi-scale per-slide cache (the training contract)."""
