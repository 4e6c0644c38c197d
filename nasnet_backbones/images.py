"""Reading image files as 8-bit RGB, the one input every model here takes, with one rule per PIL mode.

``open_rgb(path)`` is the single place the package opens an image (``nasnet predict``, the
training and evaluation datasets). Every mode PIL reads is either converted to what the pixels
mean or refused with :class:`UnreadableImage` (a ``ValueError``) naming the file:

* ``1``, ``L``, ``RGB``, ``YCbCr``, ``CMYK``, ``LAB``, ``HSV``: PIL's own conversion (CMYK JPEGs
  written by Adobe tools are un-inverted by PIL's JPEG reader).
* 16-bit greyscale (``I;16``, ``I;16B``, ...) and 32-bit integer ``I`` are scaled by the bit depth
  the file declares: a TIFF's ``BitsPerSample`` (12-bit data uses 0..4095), 16 bits for PNG and
  netpbm (whose reader already scales ``maxval`` to 16 bits), so 32768 of 65535 becomes 128, not
  white. A sample above the declared range, a negative one, or a 32-bit integer TIFF (no standard
  brightness scale) is refused. ``I`` from no file (an in-memory image) is taken as 16-bit.
* 32-bit float ``F`` (float TIFF, PFM): finite values in [0, 1] are scaled to 0..255; anything
  else is refused, since floats have no standard range to guess (rescale to [0, 1] or save as
  8/16-bit integers).
* Transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, a palette or PNG ``tRNS`` transparent colour)
  is composited onto white, as an image viewer shows it, instead of exposing whatever colour
  happens to sit under transparent pixels.
* Animated GIF / WebP / APNG / multi-page TIFF: the first frame, logged.
* Missing, unreadable, truncated or corrupt files, files that are not images, and images over
  PIL's decompression-bomb limit are refused.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["UnreadableImage", "open_rgb", "to_rgb", "WHITE"]

logger = logging.getLogger(__name__)

WHITE = (255, 255, 255)

# What PIL's decoders raise on corrupt or truncated data (its fuzzing found all of these).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
                  ZeroDivisionError, struct.error, Image.DecompressionBombError)

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I;16BS", "I;16LS")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class UnreadableImage(ValueError):
    """An image file that cannot be read, or whose pixels have no defined 8-bit RGB meaning.
    A ``ValueError``, so the CLI prints it as one line; its message always names the file."""


def open_rgb(path: str | Path) -> Image.Image:
    """The image at ``path`` as a fully loaded 8-bit ``RGB`` image (module docstring: the rule for
    every mode). Raises :class:`UnreadableImage` naming ``path`` for a missing, corrupt,
    truncated or non-image file, or pixels that cannot be converted faithfully."""
    path = Path(path)
    if not path.exists():
        raise UnreadableImage(f"image {path} does not exist")
    if path.is_dir():
        raise UnreadableImage(f"image {path} is a directory, not an image file")
    try:
        with Image.open(path) as img:
            if getattr(img, "is_animated", False):
                logger.info("%s has %s frames: using the first", path, getattr(img, "n_frames", "several"))
                img.seek(0)
            img.load()
            return to_rgb(img, name=str(path))
    except UnreadableImage:
        raise
    except UnidentifiedImageError:
        raise UnreadableImage(f"{path} is not an image PIL can read (unknown or unsupported format)") from None
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(f"{path} is too large to decode safely ({exc})") from None
    except _DECODE_ERRORS as exc:
        raise UnreadableImage(f"{path} is corrupt or truncated: {type(exc).__name__}: {exc}") from None


def to_rgb(img: Image.Image, *, name: str = "image", background: tuple[int, int, int] = WHITE) -> Image.Image:
    """``img`` in 8-bit ``RGB`` by the rules of the module docstring; ``name`` (the file) goes
    into the :class:`UnreadableImage` raised for pixels that cannot be converted faithfully."""
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "I":
        img = _scale_integer(img, name)
    elif img.mode == "F":
        img = _scale_float(img, name)
    try:
        if img.mode in _ALPHA_MODES or "transparency" in img.info:
            rgba = img.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, (*background, 255)), rgba).convert("RGB")
        return img if img.mode == "RGB" else img.convert("RGB")
    except ValueError as exc:  # a mode PIL holds but cannot convert (e.g. premultiplied La)
        raise UnreadableImage(f"{name}: PIL cannot convert its {img.mode} pixels to RGB ({exc})") from None


def _declared_bits(img: Image.Image) -> int | None:
    """Bits per sample the file declares for integer greyscale: a TIFF's ``BitsPerSample``, 16
    for PNG and netpbm (PIL scales netpbm's ``maxval`` to 16 bits) and for in-memory images."""
    if img.format == "TIFF":
        bits = getattr(img, "tag_v2", {}).get(258)
        bits = bits[0] if isinstance(bits, tuple) else bits
        return int(bits) if bits else 16
    if img.format in (None, "PNG", "PPM"):
        return 16
    return None


def _scale_integer(img: Image.Image, name: str) -> Image.Image:
    """16/32-bit integer greyscale to 8-bit ``L``, scaled by the declared bit depth."""
    bits = _declared_bits(img)
    if bits is None or bits > 16:
        raise UnreadableImage(
            f"{name}: {bits or 'unknown'}-bit integer greyscale ({img.format or 'in-memory'} {img.mode}) has no "
            "standard brightness scale; save it as 8- or 16-bit")
    arr = np.asarray(img).astype(np.float64)
    top = float(2**bits - 1)
    if arr.size and (arr.min() < 0 or arr.max() > top):
        raise UnreadableImage(f"{name}: {bits}-bit greyscale holds values {arr.min():g}..{arr.max():g}, "
                              f"outside 0..{top:g}; the file is corrupt or mislabelled")
    return Image.fromarray(np.rint(arr * (255.0 / top)).astype(np.uint8))


def _scale_float(img: Image.Image, name: str) -> Image.Image:
    """Float greyscale in [0, 1] to 8-bit ``L``; any other range is refused (no standard scale)."""
    arr = np.asarray(img).astype(np.float64)
    if not np.isfinite(arr).all():
        raise UnreadableImage(f"{name}: float image holds NaN or infinite values")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise UnreadableImage(f"{name}: float image holds values {arr.min():g}..{arr.max():g}; float pixels "
                              "must lie in [0, 1] (rescale it, or save it as 8- or 16-bit integers)")
    return Image.fromarray(np.rint(arr * 255.0).astype(np.uint8))
