"""Input and output: image reading, atomic file writing."""

from .atomic import atomic_write, atomic_writes
from .image import read_image

__all__ = ["atomic_write", "atomic_writes", "read_image"]
