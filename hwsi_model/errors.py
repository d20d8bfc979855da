"""User-facing errors: each says in one line what failed, for which slide, and how to fix it."""


class HwsiError(Exception):
    """An expected failure caused by input or configuration; reported without traceback."""


class ConfigError(HwsiError):
    """Invalid configuration key or value."""


class SampleSheetError(HwsiError):
    """Invalid sample sheet (missing column, bad slide_id, duplicate id, bad mpp)."""


class SlideInputError(HwsiError):
    """The slide itself cannot be used (its file, its pixels, its resolution): the workflow
    excludes that slide and goes on (:mod:`hwsi_model.data.failures`)."""


class SlideOpenError(SlideInputError):
    """OpenSlide cannot open the file (missing, unsupported or corrupt header)."""


class SlideReadError(SlideInputError):
    """The slide opened but its pixel data cannot be decoded."""


class MissingMppError(SlideInputError):
    """Neither the file nor the sample sheet gives the slide's resolution (um/px)."""


class StoreError(HwsiError):
    """A per-slide output store is missing, incomplete or of another schema version."""
