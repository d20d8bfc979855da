"""Evaluation (issue 7).

Library modules, each with one job:

- :mod:`~hwsi_model.evaluation.parsing`: strict parsers of closed answers;
- :mod:`~hwsi_model.evaluation.metrics`: closed accuracy, confusion, BLEU/ROUGE-L/METEOR/
  BERTScore, retrieval, zero-shot classification;
- :mod:`~hwsi_model.evaluation.families`: test-set formats -> task families -> scores;
- :mod:`~hwsi_model.evaluation.heatmaps`: evidence pictures and their overlap with a ground
  truth (the demo generator's lesion);
- :mod:`~hwsi_model.evaluation.report_html`: ``metrics.json``, slide pages, cohort report.
"""
