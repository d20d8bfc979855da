"""Cell scale: StarDist nucleus segmentation, per-cell features, cell tables and exports."""
