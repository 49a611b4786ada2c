"""Compositing and photo loading on synthetic images with known masks (no server)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from serving import compositing, images
from tests.serving_fixtures import linear_rgb_profile

RED, GREEN = (220, 30, 30), (20, 200, 60)


def _photo_and_mask(size=(40, 30)):
    """A red left half (the 'person', mask 255) and a green right half (mask 0)."""
    width, height = size
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2 :] = GREEN
    mask = np.zeros((height, width), np.uint8)
    mask[:, : width // 2] = 255
    return Image.fromarray(pixels, "RGB"), Image.fromarray(mask, "L")


@pytest.mark.parametrize(
    ("background", "expected"),
    [("black", (0, 0, 0)), ("white", (255, 255, 255)), ("#1E90ff", (30, 144, 255))],
)
def test_solid_backgrounds_replace_only_the_background(background, expected):
    photo, mask = _photo_and_mask()
    result = compositing.composite(photo, mask, background)
    assert (result.mode, result.size) == ("RGB", photo.size)
    assert result.getpixel((2, 5)) == RED
    assert result.getpixel((37, 5)) == expected


def test_transparent_stretches_the_soft_mask_about_its_cut_into_the_alpha():
    """The model's soft mask as alpha left a grey haze around people (docs/benchmarks.md)."""
    photo, _ = _photo_and_mask()

    def mask_of(level: int) -> Image.Image:
        return Image.fromarray(np.full((30, 40), level, np.uint8), "L")

    result = compositing.composite(photo, mask_of(120))
    assert (result.mode, result.size) == ("RGBA", photo.size)
    assert result.getpixel((37, 5)) == (*GREEN, 98)  # (120 - 127.5) * 4 + 127.5
    assert compositing.composite(photo, mask_of(77)).getchannel("A").getextrema() == (0, 0)
    assert compositing.composite(photo, mask_of(170)).getchannel("A").getextrema() == (255, 255)
    kept = compositing.alpha_from_mask(mask_of(77), photo.size)  # --mask-only: as it is
    assert kept.getextrema() == (77, 77)
    soft = mask_of(77)
    hard = compositing.composite(photo, soft, threshold=0.25)
    assert hard.getchannel("A").getextrema() == (255, 255)
    assert compositing.composite(photo, soft, threshold=0.5).getchannel("A").getextrema() == (0, 0)


def test_a_photo_already_cut_out_stays_cut_out():
    """A transparent PNG was flattened onto white: its cut-away parts came back as white
    (a white bar through the person where the mask was soft), in every background."""
    photo, mask = _photo_and_mask()
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.new("L", photo.size, 255))
    rgba.paste((0, 0, 0, 0), (5, 0, 10, 30))  # cut away inside the person
    rgba.paste((220, 30, 30, 128), (10, 0, 12, 30))  # a soft edge of the cut-out
    loaded = images.load(_encoded(rgba, "PNG"))

    result = compositing.composite(loaded, mask)
    assert result.getpixel((7, 5))[3] == 0
    assert result.getpixel((11, 5)) == (*RED, 128)  # its own colour, not whitened
    assert result.getpixel((2, 5)) == (*RED, 255) and result.getpixel((37, 5))[3] == 0
    black = compositing.composite(loaded, mask, "black")
    assert black.getpixel((7, 5)) == (0, 0, 0) and black.getpixel((2, 5)) == RED
    assert black.getpixel((11, 5)) == tuple(round(v * 128 / 255) for v in RED)
    assert images.WITH_ALPHA not in result.info  # never written into a file
    # A copy edited after loading (flipped) inherits info, not pixels: its own count.
    flipped = loaded.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert compositing.composite(flipped, mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                                 "white").getpixel((37, 5)) == RED  # fmt: skip
    assert images.WITH_ALPHA not in images.load(_encoded(photo.convert("RGBA"), "PNG")).info


def test_small_mask_is_upsampled_to_the_photo_size():
    photo, mask = _photo_and_mask((400, 300))
    result = compositing.composite(photo, mask.resize((32, 32)), "white")
    assert result.size == (400, 300)
    assert result.getpixel((10, 150)) == RED
    assert result.getpixel((390, 150)) == (255, 255, 255)


def test_feather_softens_only_the_edge():
    photo, mask = _photo_and_mask()
    alpha = compositing.composite(photo, mask, feather=3).getchannel("A")
    assert alpha.getpixel((0, 15)) == 255 and alpha.getpixel((39, 15)) == 0
    assert 40 < alpha.getpixel((20, 15)) < 215
    assert 40 < alpha.getpixel((19, 15)) < 215


def test_blur_background_keeps_the_person_and_no_halo():
    width, height = 60, 40
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, :30] = RED
    pixels[:, 30:] = GREEN
    pixels[::2, 30:] = (255, 255, 255)  # striped background: blurring must smooth it
    mask = np.zeros((height, width), np.uint8)
    mask[:, :30] = 255
    photo, mask_image = Image.fromarray(pixels), Image.fromarray(mask, "L")
    result = np.asarray(compositing.composite(photo, mask_image, "blur:3"))
    assert (result[:, :30] == RED).all()
    stripes = result[8:32, 40:52, 0].astype(int)
    assert stripes.max() - stripes.min() < 60  # was 255 - 20 before blurring
    # Next to the person the background keeps its own green, not the person's dark green
    # (a plain blur of the whole photo would give about 165 here).
    assert result[20, 31, 1] > 200
    assert compositing.parse_background("blur").radius is None
    assert compositing.default_blur_radius((4000, 3000)) == 80.0


def test_image_background_covers_the_photo(tmp_path):
    path = tmp_path / "beach.png"
    Image.new("RGB", (10, 80), (1, 2, 3)).save(path)
    photo, mask = _photo_and_mask()
    result = compositing.composite(photo, mask, str(path))
    assert result.size == photo.size
    assert result.getpixel((39, 0)) == (1, 2, 3) and result.getpixel((39, 29)) == (1, 2, 3)


def _srgb_to_linear(value: int) -> int:
    v = value / 255
    return round(255 * (v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4))


def _linear_to_srgb(value: int) -> int:
    v = value / 255
    return round(255 * (v * 12.92 if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055))


def test_backgrounds_take_the_photos_colour_space_and_never_lend_it_theirs(tmp_path):
    """The output carried the background's profile, so the person's colours shifted
    (by up to 34 levels for Adobe RGB), and a colour or untagged background behind a
    tagged photo was read in the photo's space: #1e90ff showed as (0, 145, 255)."""
    linear = linear_rgb_profile()
    photo, mask = _photo_and_mask()
    backdrop = tmp_path / "tagged.png"
    Image.new("RGB", (10, 10), (30, 144, 255)).save(backdrop, icc_profile=linear)

    result = compositing.composite(photo, mask, str(backdrop))  # a tagged background
    assert result.info.get("icc_profile") is None  # the untagged photo's sRGB
    assert result.getpixel((2, 5)) == RED
    expected = tuple(_linear_to_srgb(v) for v in (30, 144, 255))  # (96, 198, 255)
    assert np.abs(np.subtract(result.getpixel((37, 5)), expected)).max() <= 1

    photo.info["icc_profile"] = linear  # a tagged photo: sRGB colours are converted into it
    for background in ("#1e90ff", str(tmp_path / "plain.png")):
        Image.new("RGB", (10, 10), (30, 144, 255)).save(tmp_path / "plain.png")
        result = compositing.composite(photo, mask, background)
        assert result.info["icc_profile"] == linear and result.getpixel((2, 5)) == RED
        expected = tuple(_srgb_to_linear(v) for v in (30, 144, 255))
        assert np.abs(np.subtract(result.getpixel((37, 5)), expected)).max() <= 1, background


@pytest.mark.parametrize("spec", ["purple", "#12345", "blur:-2", "blur:x", "/no/such.png"])
def test_bad_background_is_a_clear_error(spec):
    """The client's own error (an app catches BackgroundRemoverError), a ValueError too."""
    from serving.client import BackgroundRemoverError

    with pytest.raises(ValueError, match="background|blur") as raised:
        compositing.parse_background(spec)
    assert isinstance(raised.value, BackgroundRemoverError)
    with pytest.raises(BackgroundRemoverError, match="threshold"):
        compositing.check_edge_options(2.0, 0)


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_exif_rotated_jpeg_is_loaded_upright():
    # Stored landscape 40x20 with the top row red; orientation 6 means "rotate 90° clockwise".
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :] = GREEN
    stored[:4, :] = RED
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encoded(Image.fromarray(stored), "JPEG", exif=exif, quality=95)
    upright = images.load(data)
    assert upright.size == (20, 40)
    r, g, _ = upright.getpixel((18, 20))  # the red top row is now the right column
    assert r > 150 and g < 100
    _, mask = _photo_and_mask(upright.size)
    result = compositing.composite(upright, mask, "white")
    assert result.size == (20, 40)


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (8, 6), 128),
        Image.new("RGB", (8, 6), (10, 20, 30)).convert("P"),
        Image.new("RGBA", (8, 6), (10, 20, 30, 0)),
        Image.new("CMYK", (8, 6), (0, 0, 0, 255)),
        Image.fromarray(np.full((6, 8), 65535, np.uint16)),
        Image.new("1", (8, 6), 1),
    ],
    ids=["gray", "palette", "rgba", "cmyk", "16bit", "bilevel"],
)
def test_every_mode_becomes_rgb_of_the_same_size(image):
    loaded = images.load(_encoded(image, "TIFF" if image.mode == "CMYK" else "PNG"))
    assert (loaded.mode, loaded.size) == ("RGB", (8, 6))
    encoded = images.encode_for_request(loaded)
    assert Image.open(io.BytesIO(encoded)).format == "JPEG"


def test_mode_conversions_keep_the_right_colours():
    sixteen = images.load(_encoded(Image.fromarray(np.full((4, 4), 65535, np.uint16)), "PNG"))
    assert sixteen.getpixel((0, 0)) == (255, 255, 255)  # scaled, not 65535 clipped oddly
    half = images.to_rgb(Image.fromarray(np.full((4, 4), 32896, np.uint16)))
    assert half.getpixel((0, 0)) == (128, 128, 128)
    unit_float = images.to_rgb(Image.fromarray(np.full((4, 4), 0.5, np.float32)))
    assert unit_float.getpixel((0, 0)) == (128, 128, 128)  # 0..1, not near black
    black_cmyk = images.load(_encoded(Image.new("CMYK", (4, 4), (0, 0, 0, 255)), "TIFF"))
    assert black_cmyk.getpixel((0, 0)) == (0, 0, 0)
    clear = images.load(_encoded(Image.new("RGBA", (4, 4), (10, 20, 30, 0)), "PNG"))
    assert clear.getpixel((0, 0)) == (255, 255, 255)


def test_broken_float_pixels_and_resolution_tags_are_dropped_quietly():
    """NaN pixels warned through numpy; a 0/0 resolution failed the photo ("cannot
    convert float NaN to integer") and an unset one gave outputs tagged 1 dpi."""
    import warnings

    from PIL.TiffImagePlugin import IFDRational

    values = np.array([[0.5, np.nan], [np.inf, -np.inf]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels = np.asarray(images.to_rgb(Image.fromarray(values)))[..., 0]
    assert pixels.tolist() == [[128, 0], [128, 0]]  # inf as the brightest finite value
    for resolution in (IFDRational(0, 0), 1):
        tiff = _encoded(
            Image.new("RGB", (4, 4)), "TIFF", tiffinfo={282: resolution, 283: resolution}
        )
        assert "dpi" not in images.load(tiff).info, resolution
    assert images.load(_encoded(Image.new("RGB", (4, 4)), "PNG", dpi=(300, 300))).info["dpi"]


def test_large_photo_is_downscaled_for_the_wire_only():
    photo = Image.new("RGB", (3000, 1500), (90, 90, 90))
    encoded = images.encode_for_request(photo)
    assert Image.open(io.BytesIO(encoded)).size == (1024, 512)
    assert photo.size == (3000, 1500)


def test_unreadable_bytes_raise_invalid_image():
    with pytest.raises(images.InvalidImage, match="not a readable image"):
        images.load(b"definitely not a photo")


def test_allow_pixels_opens_photos_pillow_would_refuse_and_no_larger(monkeypatch):
    """Pillow refuses photos over twice MAX_IMAGE_PIXELS; phones shoot more than its default."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # refused above 2000 pixels
    phone = _encoded(Image.new("RGB", (60, 50), (1, 2, 3)), "PNG")  # 3000 pixels
    with pytest.raises(
        images.InvalidImage,
        match=r"too large: 0.003 megapixels, above the limit of 0.002 \(serving.images.allow",
    ):
        images.load(phone)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images.allow_pixels(4000)
        assert images.load(phone).size == (60, 50)
        assert not [w for w in caught if w.category is Image.DecompressionBombWarning]
        with pytest.raises(
            images.InvalidImage, match=r"0.0048 megapixels, above the limit of 0.004 \("
        ):
            images.load(_encoded(Image.new("RGB", (80, 60)), "PNG"))  # 4800 pixels


def test_what_is_wrong_with_a_file_is_said_plainly(tmp_path):
    """Empty, a folder, a loop of links: not "a corrupt image"."""
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(images.InvalidImage, match=r"^an empty file \(0 bytes\)$"):
        images.load(empty)
    with pytest.raises(images.InvalidImage, match=r"^empty \(0 bytes\)$"):
        images.load(b"")
    with pytest.raises(images.InvalidImage, match=r"^cannot read the file \(is a directory\)$"):
        images.load(tmp_path)
    (tmp_path / "a.jpg").symlink_to(tmp_path / "b.jpg")
    (tmp_path / "b.jpg").symlink_to(tmp_path / "a.jpg")
    assert images.unreadable_reason(tmp_path / "a.jpg") == "a loop of symbolic links"
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nothing.jpg")
    assert images.unreadable_reason(tmp_path / "gone.jpg") == "a link to nothing"
    with pytest.raises(compositing.InvalidOption, match="is a loop of symbolic links"):
        compositing.parse_background(str(tmp_path / "a.jpg"))
    with pytest.raises(compositing.InvalidOption, match="is a folder, not an image"):
        compositing.parse_background(str(tmp_path))
    with pytest.raises(compositing.InvalidOption, match=r"'.*empty.jpg': an empty file"):
        compositing.parse_background(str(empty))
    bomb = Image.DecompressionBombError("Image size (1600000000 pixels) exceeds limit of ...")
    images.allow_pixels(images.MAX_OPENED_PIXELS)
    assert images.pixels_refused(bomb) == "1,600 megapixels, above the limit of 250"


def test_a_background_image_is_read_like_a_photo(tmp_path):
    """Transparent parts show white, not the colour stored under them; EXIF turns it."""
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (6, 4), (85, 0, 8, 0)).save(clear)
    assert compositing.parse_background(str(clear)).image.getpixel((0, 0)) == (255, 255, 255)
    turned = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (6, 4), (90, 90, 90)).save(turned, exif=exif)
    assert compositing.parse_background(str(turned)).image.size == (4, 6)
