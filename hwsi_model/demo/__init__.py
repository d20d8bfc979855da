"""Synthetic demo cohort: H&E-like pyramidal TIFF slides with reports, VQA and nucleus GT.

Use :func:`generate_demo_cohort` to write a small, deterministic cohort for tests and demos.
"""

__all__ = ["SLIDE_CLASSES", "generate_demo_cohort"]


def __getattr__(name: str):
    # Lazy: the demo's model builders (demo.llm, demo.tiny_encoder) need no image stack.
    if name == "generate_demo_cohort":
        from hwsi_model.demo.cohort import generate_demo_cohort

        return generate_demo_cohort
    if name == "SLIDE_CLASSES":
        from hwsi_model.demo.synthetic_tissue import SLIDE_CLASSES

        return SLIDE_CLASSES
    raise AttributeError(f"module 'hwsi_model.demo' has no attribute {name!r}")
