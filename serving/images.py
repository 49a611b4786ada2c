"""Loads photos upright as 8-bit RGB and encodes the small copy sent to the server.

Everything the model sees and everything the compositor paints on goes through
here, so a photo shot in portrait (EXIF orientation) or stored as CMYK, 16-bit,
palette or grayscale comes out as the same upright RGB pixels in both places.
"""

from __future__ import annotations

import errno
import io
import math
import os
import re
import warnings
import weakref
from typing import BinaryIO, Union

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from serving.errors import BackgroundRemoverError

# HEIC/HEIF is what iPhones shoot; Pillow reads AVIF itself.
pillow_heif.register_heif_opener()

ImageSource = Union[
    str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray
]

# Photos whose longest side exceeds this are downscaled before sending: the model
# works at a few hundred pixels at most, so more only costs bandwidth and decoding.
MAX_SIDE = 1024
MIN_SEND_SIDE = 256  # never send less, whatever the model's input
JPEG_QUALITY = 90
_KEEP_ICC_MODES = {"RGB", "RGBA"}
MIN_DPI = 10  # below, a resolution tag is unset or broken
_ANIMATED = {"GIF", "PNG", "WEBP", "TIFF"}  # formats whose extra frames are other pictures
# Where to_rgb keeps a transparent photo as it was (RGBA) beside its pixels flattened
# onto white for the model, with a weak reference to the image it belongs to: what
# was already cut away stays away in the output.
WITH_ALPHA = "bgremove.rgba"


# The largest photo bgremove and ingestion open: above the 200 MP phones shoot, which
# Pillow's own decompression-bomb guard (179 MP) refuses.  One of 200 MP took 37 s and
# 4.9 GB in bgremove.
MAX_OPENED_PIXELS = 250_000_000


def allow_pixels(limit: int) -> None:
    """Lets Pillow open photos of up to ``limit`` pixels, quietly; larger ones stay refused.

    Pillow warns above ``MAX_IMAGE_PIXELS`` (89 MP) and refuses above twice that
    as a possible decompression bomb, but phones shoot 200 MP.  This changes
    Pillow's process-wide setting, so applications call it, not the library.
    """
    Image.MAX_IMAGE_PIXELS = limit // 2
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


class InvalidImage(BackgroundRemoverError, ValueError):
    """The input is not a readable image."""


def load(source: ImageSource) -> Image.Image:
    """Opens a path, encoded bytes, PIL image or RGB array as upright 8-bit RGB at full size.

    An animation or a multi-page file gives its first frame (``header`` says how many).
    """
    if isinstance(source, Image.Image):
        if source.width * source.height == 0:
            raise InvalidImage(f"an empty photo ({source.width}x{source.height} pixels)")
        try:
            return _upright_rgb(source)
        except ValueError as err:  # a mode Pillow cannot convert, such as La
            raise InvalidImage(f"cannot read a {source.mode} image as RGB ({err})") from err
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, (bytearray, memoryview)):
        source = bytes(source)
    if not isinstance(source, (str, bytes, os.PathLike)) and not hasattr(source, "read"):
        raise TypeError(
            "a photo is a path, encoded bytes, a file object, a PIL image or an RGB array, "
            f"not {type(source).__name__}"
        )
    if isinstance(source, (str, os.PathLike)) and _empty_file(source):
        raise InvalidImage("an empty file (0 bytes)")
    if hasattr(source, "read"):  # from where it stands: Pillow would rewind to byte 0
        try:
            source = source.read()
        except (OSError, ValueError) as err:  # closed, or not readable
            raise InvalidImage(f"cannot read the photo's file object ({err})") from err
        if not isinstance(source, (bytes, bytearray, memoryview)):
            raise InvalidImage("a photo's file object must be opened in binary mode ('rb')")
        source = bytes(source)
    if isinstance(source, bytes) and not source:
        raise InvalidImage("empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.load()
            return _upright_rgb(image)
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as err:
        if isinstance(err, Image.DecompressionBombError):
            raise InvalidImage(f"too large: {pixels_refused(err)}") from err
        if isinstance(err, OSError) and err.errno is not None:  # the file, not its pixels
            raise InvalidImage(f"cannot read the file ({err.strerror.lower()})") from err
        # Pillow's own words name a BytesIO object for bytes: the format says enough.
        reason = "unknown image format" if isinstance(err, UnidentifiedImageError) else err
        raise InvalidImage(f"not a readable image ({reason})") from err


def pixels_refused(err: Image.DecompressionBombError) -> str:
    """Pillow's refusal in a user's words: how large, and the limit in force."""
    stated = re.search(r"\((\d+) pixels\)", str(err))
    size = f"{_megapixels(int(stated[1]))} megapixels" if stated else "too many pixels"
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    way_out = " (serving.images.allow_pixels raises it)" if limit < MAX_OPENED_PIXELS else ""
    return f"{size}, above the limit of {_megapixels(limit)}{way_out}"


def _megapixels(pixels: int) -> str:
    value = pixels / 1e6
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _empty_file(path: str | os.PathLike) -> bool:
    try:
        return os.path.isfile(path) and os.path.getsize(path) == 0
    except OSError:
        return False


def unreadable_reason(path: str | os.PathLike) -> str:
    """Why a path that is not a regular file cannot be read as a photo."""
    if os.path.islink(path) and not os.path.exists(path):
        try:
            os.stat(path)
        except OSError as err:
            if err.errno == errno.ELOOP:
                return "a loop of symbolic links"
        return "a link to nothing"
    if not os.path.exists(path):
        return "no such file or folder"
    return "not a regular file"  # a pipe or device: reading it could block forever


def header(source: ImageSource) -> tuple[int, int]:
    """Width x height and the number of frames or pages, from the header alone;
    (0, 1) if it cannot tell, as loading the photo then says why."""
    if isinstance(source, Image.Image):
        return source.width * source.height, getattr(source, "n_frames", 1)
    if isinstance(source, np.ndarray):
        return source.shape[0] * source.shape[1] if source.ndim >= 2 else 0, 1
    if not isinstance(source, (str, bytes, bytearray, memoryview, os.PathLike)):
        return 0, 1  # a file object is not read twice
    try:
        encoded = isinstance(source, (bytes, bytearray, memoryview))
        with Image.open(io.BytesIO(bytes(source)) if encoded else source) as image:
            # A camera JPEG with a preview opens as MPO of two frames: one photo all the same.
            frames = getattr(image, "n_frames", 1) if image.format in _ANIMATED else 1
            return image.width * image.height, frames
    except Exception:  # an unreadable file fails properly when it is loaded
        return 0, 1


def _from_array(array: np.ndarray) -> Image.Image:
    """uint8 RGB, RGBA or gray pixels, as Image.fromarray reads them (OpenCV's BGR is not)."""
    if (
        array.dtype != np.uint8
        or array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[2] not in (3, 4))
    ):
        raise InvalidImage(
            f"an array photo must be uint8 of shape (H, W), (H, W, 3) or (H, W, 4), "
            f"got {array.dtype} {array.shape}"
        )
    if array.size == 0:
        raise InvalidImage(f"an empty photo (shape {array.shape})")
    return to_rgb(Image.fromarray(np.ascontiguousarray(array)))


def _upright_rgb(image: Image.Image) -> Image.Image:
    try:
        upright = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError):  # a corrupt EXIF block is not worth failing on
        upright = image
    return to_rgb(upright)


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts any Pillow mode to 8-bit RGB; transparent areas become white, and a photo
    that is not fully opaque is kept as RGBA in ``info[WITH_ALPHA]``."""
    mode = image.mode
    rgba = None
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit (or 32-bit) grayscale: scale to 8 bits instead of clipping at 255;
        # floating-point images usually hold 0..1.
        values = np.asarray(image, dtype=np.float32)  # 8 bytes a pixel would double the peak
        finite = np.isfinite(values)
        brightest = values.max(initial=0, where=finite)
        values = np.where(finite, values, np.where(values > 0, brightest, 0.0))  # NaN: black
        if mode == "F" and brightest <= 1.0:
            values *= 255.0
        elif mode != "F" and brightest > 255:
            values /= 257.0
        gray = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
        rgb = gray.convert("RGB")
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        rgb = Image.new("RGB", rgba.size, (255, 255, 255))
        rgb.paste(rgba, mask=rgba.getchannel("A"))
    else:
        rgb = image.convert("RGB") if mode != "RGB" else image.copy()
    icc = image.info.get("icc_profile")
    rgb.info = {"icc_profile": icc} if icc and mode in _KEEP_ICC_MODES else {}
    if _plausible_dpi(image.info.get("dpi")):
        rgb.info["dpi"] = image.info["dpi"]
    if rgba is not None and rgba.getextrema()[3][0] < 255:
        # Tied to this very image: a flipped or edited copy inherits info, not pixels.
        rgb.info[WITH_ALPHA] = (weakref.ref(rgb), rgba)
    return rgb


def _plausible_dpi(dpi: object) -> bool:
    """A resolution worth passing on: TIFFs state 0/0 (NaN here) or, unset, about 1 dpi,
    which would print a photo metres wide."""
    try:
        return all(math.isfinite(float(v)) and float(v) >= MIN_DPI for v in dpi)
    except (TypeError, ValueError):
        return False


def encode_for_request(image: Image.Image, max_side: int = MAX_SIDE) -> bytes:
    """JPEG bytes of the RGB photo, downscaled so its longest side is at most ``max_side``."""
    width, height = image.size
    longest = max(width, height)
    if longest > max_side:
        scale = max_side / longest
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()
