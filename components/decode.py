"""Validating and normalising one image/mask pair, so training sees clean, upright data.

The stored image keeps its original bytes when nothing needed changing (a JPEG
stays the same JPEG); it is re-encoded only when it was rotated by EXIF,
downscaled, in a form the TensorFlow decoders would read differently, or cut
short in a way only Pillow forgives.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from components.preprocessing import decode_rgb
from serving.images import pixels_refused, to_rgb

# Masks whose aspect ratio differs from the photo's by less than this are resized.
ASPECT_TOLERANCE = 0.01
JPEG_QUALITY = 95
# RGB or gray photos of these formats are stored as they are: TensorFlow decodes
# their bytes to the same pixels as Pillow.  Any other mode, and transparency, is
# converted exactly as the client converts photos before sending them (onto
# white, 16 bits scaled), so training sees what serving will.
_KEPT = ("JPEG", "PNG")
_EXIF_ORIENTATION = 0x0112
# What ImageOps.exif_transpose applies for the orientations that swap sides.
_QUARTER_TURNS = {
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


# A photo flipped, upside down, or square and turned by its EXIF tag, with a mask that
# has no such tag: the mask fits the photo's stored grid as well as its upright one,
# and is taken as drawn on the upright photo (what EXIF-aware tools show).  Worth a
# look, so reported.
ORIENTATION_NOTE = "exif_orientation_mask_taken_as_upright"


class Rejected(Exception):
    """A pair that cannot be used; ``reason`` is the report's key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Decoded:
    image: bytes
    mask: bytes
    height: int
    width: int
    foreground_fraction: float
    reencoded: bool
    note: str = ""  # a report key when the pair is usable but worth a look


def decode_pair(image_bytes: bytes, mask_bytes: bytes, max_side: int = 0) -> Decoded:
    """The stored form of a pair, or Rejected saying why it is unusable."""
    if not image_bytes or not mask_bytes:
        raise Rejected("empty_file", f"the {'photo' if not image_bytes else 'mask'} has 0 bytes")
    image, image_format, orientation, (width, height) = _open(
        image_bytes, "unreadable_image", max_side
    )
    opened, mask_format, mask_orientation, _ = _open(mask_bytes, "unreadable_mask", 0)
    if _tag_copied_onto_upright_pixels(opened, mask_orientation, width, height):
        opened = _open(mask_bytes, "unreadable_mask", 0, upright=False)[0]
    lossy = mask_format in ("JPEG", "WEBP")  # WebP is lossy unless told otherwise
    mask = binarize_mask(opened, lossy)
    turn = _photo_rotation_to_follow(mask.shape, orientation, width, height)
    if turn is not None:
        mask = np.asarray(_mask_image(mask).transpose(turn)) > 127
    _check_aspect(mask.shape, width, height)
    converted = image.mode not in ("RGB", "L") or "transparency" in image.info
    if converted:  # before resizing: palettes and 16 bits resize badly
        image = to_rgb(image)
    if _one_colour(image):
        raise Rejected(
            "blank_image", "every pixel has one colour, nothing to learn (a transparent PNG?)"
        )
    size = _target_size(width, height, max_side)
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    if mask.shape != (size[1], size[0]):
        mask = _resized(opened, mask, turn, size, lossy)
    if not mask.any():
        raise Rejected("empty_mask", _empty_mask_detail(opened, mask_format))

    rotated = orientation not in (0, 1)
    keep = not (rotated or converted) and size == (width, height) and image_format in _KEPT
    # Pillow forgives a PNG cut just before its end chunk; TensorFlow's decoders,
    # which training uses, do not.  Pillow's pixels are whole, so they are stored.
    keep = keep and _tensorflow_reads(image_bytes)
    return Decoded(
        image=image_bytes if keep else _encode(image, image_format),
        mask=_save(_mask_image(mask), "PNG"),
        height=size[1],
        width=size[0],
        foreground_fraction=float(mask.mean()),
        reencoded=not keep,
        note=ORIENTATION_NOTE if _ambiguous(orientation, mask_orientation, width, height) else "",
    )


def _one_colour(image: Image.Image) -> bool:
    extrema = image.getextrema()
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    return all(low == high for low, high in bands)


def _target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Aspect-preserving size whose longer side is at most max_side (0: no limit)."""
    scale = max_side / max(width, height) if max_side > 0 else 1.0
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def binarize_mask(mask: Image.Image, lossy: bool = False) -> np.ndarray:
    """Boolean foreground: the alpha channel when it varies, else the gray level (for
    colour masks, the brightest channel: a red person on black is dark in luminance).

    A label map counts every non-zero level as person: class numbers (0/1, or 0/1/2
    for two people) and body parts drawn in levels of gray or colour.  Other masks
    (soft edges, 16-bit mattes) are cut at half their scale.  Floating-point masks of
    0..1 are cut at 0.5.  A two-colour palette mask is read by its colours when they
    tell (bright is person), else index 1 is the person.  ``lossy`` (a JPEG mask):
    compression makes levels that no label map has, so only the cut applies.
    """
    if mask.mode == "1":
        return np.asarray(mask, dtype=bool)
    if mask.mode in ("L", "I", "I;16"):
        values = np.asarray(mask)
        # 16-bit masks use the bits they need: 0/4095 is a 12-bit mask, cut at 2047.
        bits = max(8, int(values.max()).bit_length()) if mask.mode != "L" else 8
        return _person(values, 2**bits - 1, lossy)
    if mask.mode == "F":  # floating point: a probability or 0/1 map, else 0..255
        values = np.nan_to_num(np.asarray(mask))
        return values > (0.5 if values.max() <= 1.0 else 127.5)
    if mask.mode == "P" and np.asarray(mask).max() == 1 and "transparency" not in mask.info:
        indices = np.asarray(mask)
        palette = (mask.getpalette() or []) + [0] * 6
        if max(palette[:3]) > 127 >= max(palette[3:6]):
            return indices == 0  # a bright first colour: Pillow's quantize puts white first
        return indices == 1  # palette index 1 is the person (VOC style)
    if mask.mode in ("P", "PA"):
        mask = mask.convert("RGBA")
    if "A" in mask.getbands():
        alpha = np.asarray(mask.getchannel("A"))
        if alpha.min() != alpha.max():
            return alpha > 127
    if mask.mode in ("RGB", "RGBA"):
        return _person(np.asarray(mask.convert("RGB")).max(axis=-1), 255, lossy)
    return _person(np.asarray(mask.convert("L")), 255, lossy)


# A mask whose highest level is this or lower holds class numbers, not gray levels.
_MOST_CLASSES = 32
# A label map of body parts has at most this many levels; anti-aliasing makes more.
_MOST_PARTS = 16


def _touch(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether a pixel of ``a`` is next to one of ``b`` (4-neighbours)."""
    return bool(
        (a[1:] & b[:-1]).any()
        or (a[:-1] & b[1:]).any()
        or (a[:, 1:] & b[:, :-1]).any()
        or (a[:, :-1] & b[:, 1:]).any()
    )


def _person(values: np.ndarray, full_scale: int, lossy: bool) -> np.ndarray:
    return values > 0 if is_label_map(values, lossy) else values > full_scale // 2


def is_label_map(values: np.ndarray, lossy: bool = False) -> bool:
    """Whether 0 is the background and the other levels name classes or parts: few of
    them, or levels between 0 and the highest that fill regions of their own, where
    anti-aliasing only lines the edges (a part labelled 85 of 255 was background)."""
    if lossy or values.size == 0 or values.min() != 0:
        return False
    top = values.max()
    if top <= _MOST_CLASSES:
        return True
    middle = (values > 0) & (values < top)
    levels = np.unique(values)
    if values.ndim != 2 or min(values.shape) < 3 or not middle.any() or len(levels) > _MOST_PARTS:
        return False
    if len(levels) == 3 and not _touch(values == 0, values == top):
        return False  # a trimap: its middle level is the unknown band between the two
    inner = values[1:-1, 1:-1]
    interior = middle[1:-1, 1:-1] & (
        (values[:-2, 1:-1] == inner)
        & (values[2:, 1:-1] == inner)
        & (values[1:-1, :-2] == inner)
        & (values[1:-1, 2:] == inner)
    )
    return interior.sum() >= middle.sum() / 2


def _empty_mask_detail(mask: Image.Image, mask_format: str) -> str:
    low, high = mask.getextrema()[0] if len(mask.getbands()) > 1 else mask.getextrema()
    detail = f"no foreground pixel (mask values {low}..{high})"
    if mask_format == "JPEG" and 1 < high <= 16:
        detail += "; a 0/1 mask saved as JPEG loses its labels to compression: save masks as PNG"
    return detail


def _tensorflow_reads(data: bytes) -> bool:
    try:
        decode_rgb(data)
    except tf.errors.OpError:
        return False
    return True


def _open(
    data: bytes, reason: str, max_side: int, upright: bool = True
) -> tuple[Image.Image, str, int, tuple[int, int]]:
    """Decoded and upright (unless told not to), with its EXIF orientation and full
    upright size.

    A JPEG much larger than max_side decodes at a reduced scale (JPEG draft mode),
    which is several times faster for phone photos; the caller finishes the resize.
    """
    try:
        image = Image.open(io.BytesIO(data))
        image_format = image.format or ""
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        width, height = image.size
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        target = _target_size(image.width, image.height, max_side)
        if image_format == "JPEG" and target != image.size:
            image.draft(image.mode, target)
        image.load()
        if upright and orientation not in (0, 1):
            image = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as error:
        raise Rejected("too_large", pixels_refused(error)) from error
    except Exception as error:  # Pillow raises many types for bad files
        # Pillow names the in-memory buffer it read ("<_io.BytesIO object at 0x...>"):
        # the log names the file already.
        message = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(error))
        raise Rejected(reason, f"{type(error).__name__}: {message}") from error
    return image, image_format, orientation, (width, height)


def _tag_copied_onto_upright_pixels(
    mask: Image.Image, mask_orientation: int, width: int, height: int
) -> bool:
    """A mask whose tool copied the photo's quarter-turn tag but drew on the upright
    photo: its tag turns it away from the photo's shape, and its pixels fit as stored."""
    return (
        mask_orientation in _QUARTER_TURNS
        and not _aspect_matches((mask.height, mask.width), width, height)
        and _aspect_matches((mask.width, mask.height), width, height)
    )


def _ambiguous(orientation: int, mask_orientation: int, width: int, height: int) -> bool:
    """A turned photo whose untagged mask fits either grid (see ORIENTATION_NOTE)."""
    if orientation in (0, 1) or mask_orientation not in (0, 1):
        return False
    return orientation in (2, 3, 4) or _aspect_matches((height, width), height, width)


def _photo_rotation_to_follow(
    mask_shape: tuple[int, ...], orientation: int, width: int, height: int
) -> Image.Transpose | None:
    """The turn that brings a mask drawn on a phone photo's stored, sideways grid
    upright with it, if it was drawn there.

    Many labelling tools ignore EXIF.  For the quarter turns (orientations 5-8)
    the mask's aspect ratio tells which grid it was drawn on; flips and half
    turns keep the aspect, so such masks are taken as drawn on the upright photo.
    """
    transpose = _QUARTER_TURNS.get(orientation)
    if transpose is None or _aspect_matches(mask_shape, width, height):
        return None
    if not _aspect_matches(mask_shape, height, width):
        return None  # neither grid: _check_aspect reports it
    return transpose


def _resized(
    opened: Image.Image,
    mask: np.ndarray,
    turn: Image.Transpose | None,
    size: tuple[int, int],
    lossy: bool,
) -> np.ndarray:
    """The mask at the photo's size.  A gray mask is resized before it is cut, so that
    its soft edges place the outline between its pixels: a half-size mask then keeps
    0.999 of its IoU at full size, against 0.986 when cut first (60 ccp masks).  A
    label map's levels are not gray: it is cut first."""
    if opened.mode == "L" and not is_label_map(np.asarray(opened), lossy):
        gray = opened.transpose(turn) if turn is not None else opened
        return np.asarray(gray.resize(size, Image.Resampling.BILINEAR)) > 127
    return np.asarray(_mask_image(mask).resize(size, Image.Resampling.BILINEAR)) > 127


def _aspect_matches(mask_shape: tuple[int, ...], width: int, height: int) -> bool:
    mask_height, mask_width = mask_shape
    return abs((mask_width / mask_height) / (width / height) - 1.0) <= ASPECT_TOLERANCE


def _check_aspect(mask_shape: tuple[int, ...], width: int, height: int) -> None:
    """A mask of another size is usable (resized) only if its aspect ratio matches."""
    if not _aspect_matches(mask_shape, width, height):
        mask_height, mask_width = mask_shape
        raise Rejected(
            "size_mismatch", f"mask {mask_width}x{mask_height} vs image {width}x{height}"
        )


def _mask_image(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(mask.astype(np.uint8) * 255, mode="L")


def _encode(image: Image.Image, source_format: str) -> bytes:
    """JPEG sources stay JPEG; everything else becomes PNG (lossless)."""
    return _save(image, "JPEG" if source_format == "JPEG" else "PNG")


def _save(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": JPEG_QUALITY} if image_format == "JPEG" else {}
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()
