"""The error every reader and the image loader raise for one unusable record. It sits below both
`data.io` (which raises it for unreadable images) and `data.sample` (which loads images), so
neither imports the other to get it."""
from __future__ import annotations

__all__ = ["BadRecordError"]


class BadRecordError(ValueError):
    """One record (an image, an annotation) cannot be used. The message names the file and the
    record; training may skip such records (`data.on_bad_record`), evaluation stops on them."""
