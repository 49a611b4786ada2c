"""Turns a photo and its person mask into the finished picture (pure Pillow and numpy).

The mask arrives at the model's resolution; it is upsampled here so every output
has exactly the photo's size, and the photo itself is never resized.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from PIL import Image, ImageChops, ImageCms, ImageFilter, ImageOps

from serving import defaults, images
from serving.errors import InvalidOption

BackgroundSpec = Union[str, "os.PathLike[str]", Image.Image]

# Blur and feather radii above this are refused: a larger Gaussian blur crashes Pillow
# (inf, 1e308), and at 1000 pixels a photo is a flat average already.
MAX_RADIUS = 1000.0
# How much a cut-out's alpha is stretched about the model's cut (0.5). The model's own
# soft mask is wide, a grey haze around people. Stretched 4x, the edge stays soft over
# a pixel or two, and the alpha's mean error against the true masks of the eval splits
# falls from 0.036 to 0.015 on ccp and from 0.046 to 0.028 on hsd (docs/benchmarks.md,
# "Edges of cut-outs"). 1 keeps the model's soft mask as it is.
EDGE_CONTRAST = 4.0
_HEX = re.compile(r"#([0-9a-fA-F]{6})")
_COLORS = {"black": (0, 0, 0), "white": (255, 255, 255)}
BACKGROUND_HELP = (
    "transparent (default), black, white, #rrggbb, blur or blur:RADIUS, or an image file"
)


@dataclass(frozen=True)
class Background:
    """A parsed background choice, validated before any photo is processed."""

    kind: str  # "transparent", "color", "blur" or "image"
    color: tuple[int, int, int] = (0, 0, 0)
    radius: float | None = None
    image: Image.Image | None = None

    @property
    def opaque(self) -> bool:
        return self.kind != "transparent"


def parse_background(spec: BackgroundSpec | Background) -> Background:
    """Reads a background spec; InvalidOption, with the accepted forms, if it is unknown."""
    if isinstance(spec, Background):
        return spec
    if isinstance(spec, Image.Image):
        return Background("image", image=images.load(spec))
    if not isinstance(spec, (str, os.PathLike)):
        raise InvalidOption(
            f"a background is {BACKGROUND_HELP} (a path or a PIL image), not {type(spec).__name__}"
        )
    text = os.fspath(spec)
    lowered = text.strip().lower()
    if lowered == "transparent":
        return Background("transparent")
    if lowered in _COLORS:
        return Background("color", color=_COLORS[lowered])
    if match := _HEX.fullmatch(lowered):
        value = match.group(1)
        return Background("color", color=tuple(int(value[i : i + 2], 16) for i in (0, 2, 4)))
    if lowered == "blur" or lowered.startswith("blur:"):
        _, _, radius_text = lowered.partition(":")
        try:
            radius = float(radius_text) if radius_text else None
        except ValueError:
            radius = -1.0
        if radius is not None and not 0 < radius <= MAX_RADIUS:
            raise InvalidOption(
                f"blur radius must be a number of pixels above 0 and at most {MAX_RADIUS:g}, "
                f"got {text!r}"
            )
        return Background("blur", radius=radius)
    path = Path(text)
    if path.is_file():
        # Upright and flattened onto white like a photo, so a transparent area of the
        # background shows white, not whatever colour its pixels hold.
        try:
            return Background("image", image=images.load(path))
        except images.InvalidImage as err:
            raise InvalidOption(f"background image {text!r}: {err}") from err
    if path.is_dir():
        raise InvalidOption(f"background image {text!r} is a folder, not an image")
    if os.path.lexists(path):
        raise InvalidOption(f"background image {text!r} is {images.unreadable_reason(path)}")
    if path.suffix.lower() in defaults.PHOTO_EXTENSIONS or os.sep in text:
        raise InvalidOption(f"background image {text!r}: no such file")
    raise InvalidOption(f"unknown background {text!r}: use {BACKGROUND_HELP}")


def check_edge_options(threshold: float | None, feather: float) -> tuple[float | None, float]:
    """Both as plain floats (NumPy's too); InvalidOption naming the option (as the CLI's
    flags name it) if one is out of range or not a number."""
    try:
        threshold = None if threshold is None else float(threshold)
    except (TypeError, ValueError):
        raise InvalidOption(
            f"threshold must be a number between 0 and 1, got {threshold!r}"
        ) from None
    try:
        feather = float(feather)
    except (TypeError, ValueError):
        raise InvalidOption(f"feather must be a number of pixels, got {feather!r}") from None
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise InvalidOption(f"threshold must be between 0 and 1, got {threshold}")
    if not 0 <= feather <= MAX_RADIUS:
        raise InvalidOption(f"feather must be 0..{MAX_RADIUS:g} pixels, got {feather}")
    return threshold, feather


def alpha_from_mask(
    mask: Image.Image,
    size: tuple[int, int],
    threshold: float | None = None,
    feather: float = 0,
    edge_contrast: float = 1.0,
) -> Image.Image:
    """The L alpha at ``size``: the soft mask upsampled, hardened (at ``threshold``) or
    stretched about 0.5 (by ``edge_contrast``), then feathered."""
    threshold, feather = check_edge_options(threshold, feather)
    alpha = mask.convert("L")
    if alpha.size != size:
        alpha = alpha.resize(size, Image.Resampling.BILINEAR)
    if threshold is not None:
        cut = threshold * 255.0
        alpha = alpha.point(lambda v: 255 if v >= cut else 0)
    elif edge_contrast != 1.0:
        alpha = alpha.point(lambda v: min(255, max(0, round((v - 127.5) * edge_contrast + 127.5))))
    if feather > 0:
        alpha = alpha.filter(ImageFilter.GaussianBlur(feather))
    return alpha


def default_blur_radius(size: tuple[int, int]) -> float:
    """Blur that reads as out-of-focus at any resolution: 2% of the longest side."""
    return min(MAX_RADIUS, max(2.0, max(size) / 50.0))


def _blurred_background(photo: Image.Image, alpha: Image.Image, radius: float) -> Image.Image:
    # Blur with the person weighted out (premultiplied by 1 - alpha), so the person's
    # colours do not bleed into the background as a halo around the silhouette.
    weights = ImageOps.invert(alpha)
    premultiplied = Image.merge("RGBA", (*photo.split(), weights)).convert("RGBa")
    blurred = premultiplied.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
    return blurred.convert("RGB")


def _in_colour_space_of(photo: Image.Image, image: Image.Image) -> Image.Image:
    """``image`` converted into the photo's colour space (untagged means sRGB), so a
    background looks as it did behind a photo of another profile."""
    source, target = image.info.get("icc_profile"), photo.info.get("icc_profile")
    if source == target:
        return image
    try:
        return ImageCms.profileToProfile(
            image, _profile(source), _profile(target), outputMode="RGB"
        )
    except (ImageCms.PyCMSError, OSError, ValueError):  # a profile littleCMS cannot use
        return image


def _profile(icc: bytes | None) -> ImageCms.ImageCmsProfile:
    if icc is None:
        return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return ImageCms.ImageCmsProfile(io.BytesIO(icc))


def composite(
    photo: Image.Image,
    mask: Image.Image,
    background: BackgroundSpec | Background = "transparent",
    threshold: float | None = None,
    feather: float = 0,
) -> Image.Image:
    """The photo with its background replaced; RGBA for ``transparent``, RGB otherwise."""
    choice = parse_background(background)
    photo = photo if photo.mode == "RGB" else images.to_rgb(photo)
    alpha = alpha_from_mask(mask, photo.size, threshold, feather, EDGE_CONTRAST)
    owner, original = photo.info.get(images.WITH_ALPHA, (None, None))
    if owner is None or owner() is not photo:
        original = None  # an edited copy of a transparent photo: its own pixels count
    if original is not None:  # a cut-out stays cut out
        alpha = ImageChops.darker(alpha, original.getchannel("A"))
    if choice.kind == "transparent":
        # Its own colours where it was see-through, not the white the model saw.
        result = original.copy() if original is not None else photo.copy()
        result.putalpha(alpha)
    else:
        if choice.kind == "color":  # given in sRGB, as colours on the web are
            colour = _in_colour_space_of(photo, Image.new("RGB", (1, 1), choice.color))
            behind = Image.new("RGB", photo.size, colour.getpixel((0, 0)))
        elif choice.kind == "blur":
            radius = choice.radius or default_blur_radius(photo.size)
            behind = _blurred_background(photo, alpha, radius)
        else:
            fitted = ImageOps.fit(choice.image, photo.size, Image.Resampling.LANCZOS)
            behind = _in_colour_space_of(photo, fitted)  # fit keeps the image's profile
        colours = original.convert("RGB") if original is not None else photo
        result = Image.composite(colours, behind, alpha)
    result.info = {}  # not the background's profile: the person's numbers are the photo's
    for key in ("icc_profile", "dpi"):  # the photo's colour space and print size
        if photo.info.get(key):
            result.info[key] = photo.info[key]
    return result
