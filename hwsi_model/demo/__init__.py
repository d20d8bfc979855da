"""Synthetic demo cohort: H&E-like pyramidal TIFF slides with reports, VQA and nucleus GT.

Use :func:`generate_demo_cohort` to write a small, deterministic cohort for tests and demos.
"""

from .cohort import generate_demo_cohort
from .synthetic_tissue import SLIDE_CLASSES

__all__ = ["SLIDE_CLASSES", "generate_demo_cohort"]
