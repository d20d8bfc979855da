"""Evaluation library: strict answer parsers, metrics, task families, evidence heatmaps, HTML
reports (issue 7). The runner, CLI and Snakemake rule that call it live elsewhere."""
