"""Tissue detection and the patch/region grid of a slide."""
