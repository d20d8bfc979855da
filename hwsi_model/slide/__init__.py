"""Slide I/O over OpenSlide with micrometre-based geometry."""

from hwsi_model.slide.reader import MppInfo, SlideReader, open_slide

__all__ = ["MppInfo", "SlideReader", "open_slide"]
