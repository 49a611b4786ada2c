"""ImageExampleGen on real files: every kind of bad input, the stored pixels, the split."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps
from tfx import v1 as tfx
from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
from tfx.types import artifact_utils, standard_artifacts

from components import ingestion_report as report_lib
from components import pairs
from components.decode import ORIENTATION_NOTE, Rejected, binarize_mask, decode_pair
from components.errors import PipelineStopped
from components.image_example_gen import DecodePairFn, Executor, ImageExampleGen
from components.ingestion_report import IngestionError, check_report
from tests.serving_fixtures import png_bytes
from tfx_pipeline.config import LOCAL_BEAM_ARGS

W, H = 40, 30
GOOD_VIDEOS = {"alpha": 4, "bravo": 3, "charlie": 3, "delta": 3, "echo": 3, "foxtrot": 3}
KEPT_SPECIALS = ["resized_0001", "rgba_0001", "pal_0001", "rgb_0001", "exif_0001"]
EXPECTED_SKIPS = {
    "empty_file": ["images/zero_0001.jpg"],
    "unreadable_image": ["images/text_0001.png", "images/trunc_0001.jpg"],
    "missing_mask": ["images/nomask_0001.png"],
    "mask_without_photo": ["masks/noimage_0001.png"],
    "size_mismatch": ["images/aspect_0001.png"],
    "empty_mask": ["images/empty_0001.png"],
}


def _photo(seed: int, width: int = W, height: int = H) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _smooth(width: int, height: int) -> np.ndarray:
    """Gradients JPEG keeps well, but any wrong rotation or flip changes a lot."""
    y, x = np.mgrid[0:height, 0:width]
    red, green = 255 * x / (width - 1), 255 * y / (height - 1)
    return np.stack([red, green, np.full_like(red, 60.0)], -1).astype(np.uint8)


def _mask(width: int = W, height: int = H, box: tuple[int, int, int, int] = (8, 5, 25, 27)):
    mask = np.zeros((height, width), np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    return mask


def _save(array: np.ndarray, path: Path, **options) -> None:
    Image.fromarray(array).save(path, **options)


def _jpeg_bytes(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95, **options)
    return buffer.getvalue()


def make_bad_folder(root: Path) -> dict[str, np.ndarray]:
    """Good videos plus one pair per special case; returns the expected upright photos."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    expected: dict[str, np.ndarray] = {}
    seed = 0
    for video, frames in GOOD_VIDEOS.items():
        for frame in range(1, frames + 1):
            seed += 1
            pair_id = f"{video}_{frame:04d}"
            photo = _photo(seed)
            expected[pair_id] = photo
            if video == "alpha":  # JPEG photos must be stored byte for byte
                (images / f"{pair_id}.jpg").write_bytes(_jpeg_bytes(photo))
            else:
                _save(photo, images / f"{pair_id}.png")
            _save(_mask(), masks / f"{pair_id}.png")

    # Bad files.
    (images / "zero_0001.jpg").write_bytes(b"")
    _save(_mask(), masks / "zero_0001.png")
    (images / "trunc_0001.jpg").write_bytes(_jpeg_bytes(_photo(90))[:300])
    _save(_mask(), masks / "trunc_0001.png")
    (images / "text_0001.png").write_text("this is not a picture\n")
    _save(_mask(), masks / "text_0001.png")
    _save(_photo(91), images / "nomask_0001.png")
    _save(_mask(), masks / "noimage_0001.png")
    _save(_photo(92), images / "aspect_0001.png")
    _save(_mask(W, W, (5, 5, 20, 20)), masks / "aspect_0001.png")
    _save(_photo(93), images / "empty_0001.png")
    _save(np.zeros((H, W), np.uint8), masks / "empty_0001.png")

    # Special cases that must be kept.
    for pair_id, seed in zip(KEPT_SPECIALS, range(100, 105), strict=True):
        expected[pair_id] = _photo(seed)
        if pair_id != "exif_0001":
            _save(expected[pair_id], images / f"{pair_id}.png")
    _save(_mask(2 * W, 2 * H, (16, 10, 50, 54)), masks / "resized_0001.png")
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = _mask()
    _save(rgba, masks / "rgba_0001.png")
    palette = Image.fromarray((_mask() > 0).astype(np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 255, 255])
    palette.save(masks / "pal_0001.png")
    _save(np.repeat(_mask()[..., None], 3, axis=2), masks / "rgb_0001.png")
    # EXIF orientation 6: stored sideways, displayed upright (H wide, W tall).
    upright = _smooth(width=H, height=W)
    expected["exif_0001"] = upright
    sideways = np.rot90(upright, k=1)  # what a camera stores for orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    (images / "exif_0001.jpg").write_bytes(_jpeg_bytes(np.ascontiguousarray(sideways), exif=exif))
    _save(_mask(H, W, (5, 8, 20, 30)), masks / "exif_0001.png")
    return expected


def run_executor(out: Path, data_dirs: list[Path], **settings) -> standard_artifacts.Examples:
    examples = standard_artifacts.Examples()
    examples.uri = str(out)
    properties = {
        "data_dirs": json.dumps([str(d) for d in data_dirs]),
        "group_pattern": r"^(.+)_\d+$",
        "eval_fraction": 0.3,
        "max_side": 0,
        "min_usable_fraction": 0.5,
        "input_fingerprint": pairs.input_fingerprint([str(d) for d in data_dirs]),
        **settings,
    }
    context = BaseBeamExecutor.Context(beam_pipeline_args=LOCAL_BEAM_ARGS, tmp_dir=str(out / "tmp"))
    Executor(context).Do({}, {"examples": [examples]}, properties)
    return examples


def read_split(examples: standard_artifacts.Examples, split: str) -> dict[str, tf.train.Example]:
    uri = artifact_utils.get_split_uri([examples], split)
    files = tf.io.gfile.glob(os.path.join(uri, "*.gz"))
    records = tf.data.TFRecordDataset(files, compression_type="GZIP")
    parsed = [tf.train.Example.FromString(r.numpy()) for r in records]
    return {e.features.feature["id"].bytes_list.value[0].decode(): e for e in parsed}


def _feature(example: tf.train.Example, key: str):
    feature = example.features.feature[key]
    return (feature.bytes_list.value or feature.int64_list.value or feature.float_list.value)[0]


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingestion")
    expected = make_bad_folder(root / "data")
    examples = run_executor(root / "out", [root / "data"])
    report = json.loads((root / "out" / "ingestion_report.json").read_text())
    stored = {split: read_split(examples, split) for split in pairs.SPLITS}
    return {"root": root, "expected": expected, "report": report, "stored": stored}


def test_report_counts_every_bad_case_by_reason(ingested):
    report = ingested["report"]
    assert report["skipped_by_reason"] == {r: len(n) for r, n in EXPECTED_SKIPS.items()}
    assert report["skipped_examples"] == EXPECTED_SKIPS
    usable = sum(GOOD_VIDEOS.values()) + len(KEPT_SPECIALS)
    assert report["usable"] == usable
    # A mask without its photo is not a photo that failed: it does not count.
    bad_photos = sum(len(names) for r, names in EXPECTED_SKIPS.items() if r != "mask_without_photo")
    assert report["photos"] == usable + bad_photos
    assert report["usable_fraction"] == round(usable / (usable + bad_photos), 4)
    stored = ingested["stored"]
    assert report["splits"] == {split: len(stored[split]) for split in pairs.SPLITS}


def test_good_pairs_are_stored_intact(ingested):
    examples = {**ingested["stored"]["train"], **ingested["stored"]["eval"]}
    assert set(examples) == set(ingested["expected"])
    data = ingested["root"] / "data"
    for pair_id, example in examples.items():
        image = _pixels(_feature(example, "image"))
        mask = _pixels(_feature(example, "mask"))
        assert (_feature(example, "height"), _feature(example, "width")) == image.shape[:2]
        assert mask.shape == image.shape[:2] and mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 255}
        assert _feature(example, "foreground_fraction") == pytest.approx((mask > 0).mean())
        if pair_id.startswith("alpha_"):  # untouched JPEG: the very same bytes
            assert _feature(example, "image") == (data / "images" / f"{pair_id}.jpg").read_bytes()
        elif pair_id != "exif_0001":  # lossless PNG: the very same pixels
            np.testing.assert_array_equal(image, ingested["expected"][pair_id])
            np.testing.assert_array_equal(mask, _mask())


def test_special_masks_and_exif_are_normalised(ingested):
    examples = {**ingested["stored"]["train"], **ingested["stored"]["eval"]}
    for pair_id in ("rgba_0001", "pal_0001", "rgb_0001", "resized_0001"):
        np.testing.assert_array_equal(_pixels(_feature(examples[pair_id], "mask")), _mask())
    exif = examples["exif_0001"]
    stored = _pixels(_feature(exif, "image"))
    assert stored.shape == (W, H, 3)  # upright: 30 wide, 40 tall
    assert Image.open(io.BytesIO(_feature(exif, "image"))).getexif().get(0x0112, 1) == 1
    difference = np.abs(stored.astype(int) - ingested["expected"]["exif_0001"].astype(int))
    assert difference.mean() < 4  # JPEG noise only; a wrong rotation or flip gives > 40
    np.testing.assert_array_equal(_pixels(_feature(exif, "mask")), _mask(H, W, (5, 8, 20, 30)))


def test_frames_of_one_video_stay_in_one_split(ingested):
    split_of: dict[str, set[str]] = {}
    for split, examples in ingested["stored"].items():
        assert examples, f"{split} is empty"
        for pair_id in examples:
            split_of.setdefault(pairs.group_key(pair_id, r"^(.+)_\d+$"), set()).add(split)
    assert all(len(splits) == 1 for splits in split_of.values())
    assert len(split_of) == len(GOOD_VIDEOS) + len(KEPT_SPECIALS)


def test_too_few_usable_pairs_fails_naming_folder_and_reasons(ingested):
    with pytest.raises(IngestionError, match=r"min_usable_fraction 99%.*unreadable_image: 2"):
        check_report(ingested["report"], 0.99)


def test_nothing_usable_fails_the_component(tmp_path):
    data = tmp_path / "junk"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for n in range(3):
        (data / "images" / f"v{n}_0001.png").write_text("not an image")
        _save(_mask(), data / "masks" / f"v{n}_0001.png")
    (data / "images" / "v9_0001.jpg").write_bytes(b"")
    _save(_mask(), data / "masks" / "v9_0001.png")
    with pytest.raises(IngestionError) as error:
        run_executor(tmp_path / "out", [data])
    message = str(error.value)
    assert f"no usable image/mask pairs in {data}" in message
    assert "unreadable_image: 3" in message and "empty_file: 1" in message
    report = json.loads((tmp_path / "out" / "ingestion_report.json").read_text())
    assert report["usable"] == 0


@pytest.mark.timeout(180)
def test_links_to_nothing_and_pipes_are_skipped_and_counted(tmp_path):
    """A dangling link crashed the run while it was being built, and a named pipe
    (FIFO) blocked ingestion forever."""
    data = tmp_path / "odd"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for n in range(4):
        _save(_photo(n), data / "images" / f"v{n}_0001.png")
        _save(_mask(), data / "masks" / f"v{n}_0001.png")
    (data / "images" / "gone_0001.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(data / "images" / "pipe_0001.jpg")
    for stem in ("gone_0001", "pipe_0001"):
        _save(_mask(), data / "masks" / f"{stem}.png")
    run_executor(tmp_path / "out", [data])
    report = json.loads((tmp_path / "out" / "ingestion_report.json").read_text())
    assert report["usable"] == 4
    assert report["skipped_examples"]["read_error"] == [
        "images/gone_0001.jpg",
        "images/pipe_0001.jpg",
    ]


def test_empty_folder_fails_with_a_clear_message(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        IngestionError, match="no usable image/mask pairs in .*empty.*missing or empty"
    ):
        run_executor(tmp_path / "out", [tmp_path / "empty"])


def test_several_folders_prefix_ids_and_downscale(tmp_path):
    for name, size in (("ccp", (60, 90)), ("hsd", (90, 60))):
        (tmp_path / name / "images").mkdir(parents=True)
        (tmp_path / name / "masks").mkdir()
        for n in range(3):
            _save(_photo(n, *size), tmp_path / name / "images" / f"{n:04d}.png")
            _save(_mask(*size, (10, 10, 40, 40)), tmp_path / name / "masks" / f"{n:04d}.png")
    examples = run_executor(
        tmp_path / "out", [tmp_path / "ccp", tmp_path / "hsd"], group_pattern="", max_side=45
    )
    stored = {**read_split(examples, "train"), **read_split(examples, "eval")}
    assert sorted(stored) == [f"{d}/{n:04d}" for d in ("ccp", "hsd") for n in range(3)]
    for pair_id, example in stored.items():
        expected = (45, 30) if pair_id.startswith("ccp") else (30, 45)
        assert (_feature(example, "height"), _feature(example, "width")) == expected
        assert _pixels(_feature(example, "mask")).shape == expected


def test_component_runs_in_a_pipeline_and_is_cached_until_inputs_change(tmp_path):
    data = tmp_path / "data"
    make_bad_folder(data)

    def run() -> list[str]:
        generator = ImageExampleGen(data_dirs=[str(data)], group_pattern="", max_side=32)
        pipeline = tfx.dsl.Pipeline(
            pipeline_name="ingestion-test",
            pipeline_root=str(tmp_path / "root"),
            components=[generator],
            enable_cache=True,
            metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
                str(tmp_path / "metadata.sqlite")
            ),
            beam_pipeline_args=LOCAL_BEAM_ARGS,
        )
        tfx.orchestration.LocalDagRunner().run(pipeline)
        return sorted(
            p.name for p in (tmp_path / "root" / "ImageExampleGen" / "examples").iterdir()
        )

    first = run()
    assert run() == first  # unchanged inputs: cached, no new artifact
    _save(_photo(7), data / "images" / "golf_0001.png")
    _save(_mask(), data / "masks" / "golf_0001.png")
    third = run()
    [latest] = set(third) - set(first)
    outputs = tmp_path / "root" / "ImageExampleGen" / "examples"
    report = json.loads((outputs / latest / "ingestion_report.json").read_text())
    assert report["settings"]["group_pattern"] == "" and report["settings"]["max_side"] == 32
    assert report["usable"] == sum(GOOD_VIDEOS.values()) + len(KEPT_SPECIALS) + 1


# Units: pairing, grouping, splitting, fingerprint, masks, downscaling.


def test_pairing_by_stem_reports_strays(tmp_path):
    files = ["images/a_1.jpg", "images/a_1.png", "images/b_2.png", "images/notes.txt"]
    files += ["images/.DS_Store", "masks/a_1.png", "masks/b_2.png", "masks/c_3.png"]
    for rel in files:
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    listing = pairs.list_pairs([str(tmp_path)], r"^(.+)_\d+$")
    # Two photos for one mask: which one it was drawn on cannot be told, so neither.
    assert [(p.id, p.group, Path(p.image).name) for p in listing.pairs] == [("b_2", "b", "b_2.png")]
    assert sorted((s.reason, s.name) for s in listing.skipped) == [
        ("duplicate_id", "images/a_1.jpg"),
        ("duplicate_id", "images/a_1.png"),
        ("duplicate_mask", "masks/a_1.png"),  # its mask is not used either, and says so
        ("mask_without_photo", "masks/c_3.png"),
        ("unsupported_extension", "images/notes.txt"),
    ]


def test_pairing_reaches_into_subfolders_and_any_letter_case(tmp_path):
    files = ["Images/day1/a_1.jpg", "Images/day2/a_1.jpg", "Masks/day1/a_1.png"]
    files += ["Masks/day2/a_1.png", "Images/b_2.jpg", "Masks/b_2.png"]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    listing = pairs.list_pairs([str(tmp_path)], r"^(.+)_\d+$")
    assert [(p.id, p.group) for p in listing.pairs] == [
        ("b_2", "b"),
        ("day1/a_1", "day1/a"),
        ("day2/a_1", "day2/a"),
    ]
    assert not listing.skipped and not listing.warnings


def test_another_layout_is_named_in_the_warning(tmp_path):
    for rel in ("photos/a.jpg", "labels/a.png", "README.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    listing = pairs.list_pairs([str(tmp_path)], "")
    assert not listing.pairs
    [warning] = listing.warnings
    assert "no images/ and masks/ photos to pair (found: README.txt, labels/, photos/)" in warning


def test_a_folder_that_gives_nothing_stops_the_run_and_sidecars_do_not_count(tmp_path):
    good = tmp_path / "good"
    (good / "images").mkdir(parents=True)
    (good / "masks").mkdir()
    for n in range(4):
        _save(_photo(n), good / "images" / f"{n:04d}.jpg")
        (good / "images" / f"{n:04d}.xmp").write_text("<x:xmpmeta/>")  # editor sidecars
        (good / "images" / f"{n:04d}.AAE").write_text("<plist/>")
        _save(_mask(), good / "masks" / f"{n:04d}.png")
    examples = run_executor(tmp_path / "one", [good], group_pattern="")
    report = json.loads((tmp_path / "one" / "ingestion_report.json").read_text())
    assert report["usable"] == 4 and report["usable_fraction"] == 1.0
    assert report["skipped_by_reason"] == {"unsupported_extension": 8}
    assert report["usable_by_folder"] == {str(good): 4}
    assert sum(len(read_split(examples, split)) for split in pairs.SPLITS) == 4

    typo = tmp_path / "goood"
    with pytest.raises(IngestionError, match=f"{typo} gave no usable pair"):
        run_executor(tmp_path / "two", [good, typo], group_pattern="")


def test_pairing_follows_df_csv(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for rel in ("images/x.jpg", "masks/x_mask.png", "images/y.jpg", "images/unlisted.jpg"):
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "df.csv").write_text(
        "images,masks\nimages/x.jpg,masks/x_mask.png\nimages/y.jpg,masks/y.png\n"
        "images/gone.jpg,masks/gone.png\n"
    )
    listing = pairs.list_pairs([str(tmp_path)], "")
    assert [(p.id, Path(p.mask).name) for p in listing.pairs] == [("x", "x_mask.png")]
    assert [(s.reason, s.name) for s in listing.skipped] == [
        ("missing_mask", "images/y.jpg"),
        ("missing_image", "images/gone.jpg"),
    ]
    assert listing.warnings == [
        f"{tmp_path / 'df.csv'}: 1 file(s) under images/ are not listed and were left out "
        "(e.g. images/unlisted.jpg)"
    ]


def test_masks_named_after_their_photo_plus_a_word_are_paired(tmp_path):
    """a.jpg with a_mask.png was 'mask_without_photo' and 'missing_mask', with no hint."""
    names = ["images/a.jpg", "images/day2/b.jpg", "images/c.jpg", "images/d.jpg"]
    names += ["masks/a_mask.png", "masks/day2/b-seg.png", "masks/c.png"]
    names += ["masks/d_mask.png", "masks/d.matte.png"]  # two candidates: neither is taken
    for rel in names:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    listing = pairs.list_pairs([str(tmp_path)], "")
    assert {p.id: p.mask.rpartition("/masks/")[2] for p in listing.pairs} == {
        "a": "a_mask.png",
        "day2/b": "day2/b-seg.png",
        "c": "c.png",
    }
    assert sorted((s.reason, s.name) for s in listing.skipped) == [
        ("mask_without_photo", "masks/d.matte.png"),
        ("mask_without_photo", "masks/d_mask.png"),
        ("missing_mask", "images/d.jpg"),
    ]
    assert any("paired 2 mask(s) named after their photo" in w for w in listing.warnings)
    # A photo whose own stem is ambiguous (two masks) takes no suffixed mask either.
    for rel in ("masks/a.png", "masks/a.jpg"):
        (tmp_path / rel).write_bytes(b"x")
    listing = pairs.list_pairs([str(tmp_path)], "")
    assert "a" not in {p.id for p in listing.pairs}
    assert ("mask_without_photo", "masks/a_mask.png") in {
        (s.reason, s.name) for s in listing.skipped
    }
    assert not any("'images/a.jpg' with" in w for w in listing.warnings)


def test_df_csv_from_excel_with_absolute_paths(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for rel in ("images/café.jpg", "masks/café.png"):
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "df.csv").write_bytes(
        f"images,masks\n{tmp_path}/images/café.jpg,masks/café.png\n".encode("cp1252")
    )
    listing = pairs.list_pairs([str(tmp_path)], "")
    assert [p.id for p in listing.pairs] == ["café"]
    assert not listing.skipped and not listing.warnings
    # The same folder through a link: its listed paths are the real ones (every row was
    # missing_image before).
    (tmp_path.parent / f"{tmp_path.name}-link").symlink_to(tmp_path)
    listing = pairs.list_pairs([str(tmp_path.parent / f"{tmp_path.name}-link")], "")
    assert [p.id for p in listing.pairs] == ["café"] and not listing.skipped
    # Excel's "Unicode text" is UTF-16 with a byte-order mark.
    (tmp_path / "df.csv").write_bytes(
        "images,masks\nimages/café.jpg,masks/café.png\n".encode("utf-16")
    )
    listing = pairs.list_pairs([str(tmp_path)], "")
    assert [p.id for p in listing.pairs] == ["café"] and not listing.warnings


@pytest.mark.parametrize(
    "content",
    [b"images,masks\nimages/a.jpg," + b"m" * 200_000 + b"\n", b"\x00\x9a\r\x1bq\x00\n\x00"],
    ids=["field-over-128KB", "binary"],
)
def test_an_unreadable_df_csv_is_a_warning_and_pairing_goes_by_name(tmp_path, content):
    for rel in ("images/a.jpg", "masks/a.png"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "df.csv").write_bytes(content)
    listing = pairs.list_pairs([str(tmp_path)], "")
    assert [p.id for p in listing.pairs] == ["a"]
    [warning] = listing.warnings
    assert "df.csv: " in warning and "paired by file name" in warning


@pytest.mark.parametrize(
    ("stem", "pattern", "group"),
    [
        ("vid3_0012", r"^(.+)_\d+$", "vid3"),
        ("0001", r"^(.+)_\d+$", "0001"),
        ("hsd_0001", "", "hsd_0001"),
        ("a-b-7", r"^(\w+)-", "a"),
    ],
)
def test_group_key(stem, pattern, group):
    assert pairs.group_key(stem, pattern) == group


def _pairs_of(groups: dict[str, int]) -> list[pairs.Pair]:
    return [
        pairs.Pair(f"{g}_{i}", g, "i", "m", f"{g}_{i}") for g, n in groups.items() for i in range(n)
    ]


def test_split_is_deterministic_near_the_fraction_and_never_empty():
    many = _pairs_of({f"video{n}": 5 for n in range(40)})
    split = pairs.assign_splits(many, 0.2, "")
    assert split == pairs.assign_splits(list(reversed(many)), 0.2, "")
    assert sum(s == pairs.EVAL for s in split.values()) == 8
    assert sorted(pairs.assign_splits(_pairs_of({"a": 9, "b": 1}), 0.2, "").values()) == [
        pairs.EVAL,
        pairs.TRAIN,
    ]


def test_one_group_fails_suggesting_an_empty_pattern():
    with pytest.raises(PipelineStopped, match=re.escape("4 pair(s) into 1 group(s) ('hsd')")) as e:
        pairs.assign_splits(_pairs_of({"hsd": 4}), 0.2, r"^(.+)_\d+$")
    assert 'group_pattern = ""' in str(e.value)


def test_a_group_bigger_than_eval_is_flagged():
    assert pairs.coarse_group_warnings(_pairs_of({f"v{n}": 3 for n in range(10)}), 0.2) == []
    [warning] = pairs.coarse_group_warnings(_pairs_of({"hsd": 30, "a": 3, "b": 3}), 0.2)
    assert "'hsd' holds 30 of 36 pairs" in warning and 'group_pattern = ""' in warning


def test_fingerprint_changes_only_when_files_do(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"one")
    before = pairs.input_fingerprint([str(tmp_path)])
    assert pairs.input_fingerprint([str(tmp_path)]) == before
    (tmp_path / "images" / "a.png").write_bytes(b"three")
    changed = pairs.input_fingerprint([str(tmp_path)])
    assert changed != before
    (tmp_path / "images" / "b.png").write_bytes(b"")
    assert pairs.input_fingerprint([str(tmp_path)]) not in (before, changed)
    assert pairs.input_fingerprint([str(tmp_path / "nowhere")]) != before


def test_binarize_mask_modes():
    shape = _mask() > 127
    luminance = Image.fromarray(np.where(shape, 200, 100).astype(np.uint8), "L")
    np.testing.assert_array_equal(binarize_mask(luminance), shape)
    np.testing.assert_array_equal(binarize_mask(luminance.convert("RGB")), shape)
    np.testing.assert_array_equal(binarize_mask(luminance.convert("P")), shape)
    opaque = luminance.convert("RGBA")  # constant alpha: luminance decides
    np.testing.assert_array_equal(binarize_mask(opaque), shape)
    cutout = np.zeros((H, W, 4), np.uint8)
    cutout[..., :3] = 30  # dark everywhere; only alpha carries the person
    cutout[..., 3] = _mask()
    np.testing.assert_array_equal(binarize_mask(Image.fromarray(cutout, "RGBA")), shape)
    la = Image.fromarray(np.stack([np.full((H, W), 255, np.uint8), _mask()], -1), "LA")
    np.testing.assert_array_equal(binarize_mask(la), shape)
    red = np.zeros((H, W, 3), np.uint8)
    red[shape] = (200, 0, 0)  # luminance 60: dark, yet the person
    np.testing.assert_array_equal(binarize_mask(Image.fromarray(red, "RGB")), shape)
    voc = Image.fromarray(shape.astype(np.uint8), "P")
    voc.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)  # index 1 = dark red
    np.testing.assert_array_equal(binarize_mask(voc), shape)
    indices = Image.fromarray(shape.astype(np.uint8), "L")  # class indices 0/1
    np.testing.assert_array_equal(binarize_mask(indices), shape)
    np.testing.assert_array_equal(binarize_mask(indices.convert("RGB")), shape)
    np.testing.assert_array_equal(binarize_mask(indices.convert("RGBA")), shape)
    # What Pillow writes for a black-and-white mask saved with quantize: white first.
    quantized = luminance.point(lambda v: 255 if v > 127 else 0).convert("RGB").quantize(2)
    assert quantized.getpalette()[:3] == [255, 255, 255]
    np.testing.assert_array_equal(binarize_mask(quantized), shape)
    np.testing.assert_array_equal(
        binarize_mask(indices.point(lambda v: v * 255).convert("1")), shape
    )
    # Floating-point masks (TIFF): a 0..1 probability map, or 0..255.
    for scale in (1.0, 255.0):
        floats = Image.fromarray(np.where(shape, 0.9, 0.1).astype(np.float32) * scale, "F")
        np.testing.assert_array_equal(binarize_mask(floats), shape)


def test_downscale_keeps_aspect_and_binary_mask():
    photo = _photo(5, 200, 100)
    mask = _mask(200, 100, (50, 20, 130, 90))
    decoded = decode_pair(_jpeg_bytes(photo), png_bytes(mask), max_side=50)
    assert (decoded.width, decoded.height) == (50, 25) and decoded.reencoded
    assert Image.open(io.BytesIO(decoded.image)).format == "JPEG"
    stored = _pixels(decoded.mask)
    assert stored.shape == (25, 50) and set(np.unique(stored)) == {0, 255}
    assert decoded.foreground_fraction == pytest.approx((mask > 0).mean(), abs=0.05)
    kept = decode_pair(_jpeg_bytes(photo), png_bytes(mask), max_side=500)
    assert not kept.reencoded and kept.image == _jpeg_bytes(photo)


def test_photos_are_converted_as_the_client_converts_them():
    """Training must see what serving sends: transparency on white, 16 bits scaled."""
    mask = png_bytes(_mask())
    # One pixel apart from the rest in each: a photo of one colour is blank_image.
    clear = np.zeros((H, W, 4), np.uint8)  # transparent black
    clear[0, 0] = (10, 20, 30, 255)
    stored = _pixels(decode_pair(png_bytes(clear), mask).image)
    assert stored.shape == (H, W, 3) and stored[1:].min() == 255
    keyed = io.BytesIO()  # an RGB PNG whose black is declared transparent (tRNS)
    tagged = Image.new("RGB", (W, H))
    tagged.putpixel((0, 0), (9, 9, 9))
    tagged.save(keyed, format="PNG", transparency=(0, 0, 0))
    stored = _pixels(decode_pair(keyed.getvalue(), mask).image)
    assert stored[1:].min() == 255
    mid_gray = np.full((H, W), 32896, np.uint16)  # 16 bits; clipping would make it white
    mid_gray[0, 0] = 0
    stored = _pixels(decode_pair(png_bytes(mid_gray), mask).image)
    assert stored.shape == (H, W, 3) and set(np.unique(stored[1:])) == {128}


def test_names_that_differ_only_in_case_and_lossy_0_1_masks_say_what_to_fix(tmp_path):
    for rel in ("images/Clip_0001.png", "masks/clip_0001.png"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    listing = pairs.list_pairs([str(tmp_path)], "")
    assert not listing.pairs
    assert any(
        "differ only in letter case ('Clip_0001' and 'clip_0001')" in w for w in listing.warnings
    )

    ones = io.BytesIO()  # person = 1, saved as JPEG: compression smears it to 0..2
    y, x = np.mgrid[0:H, 0:W]
    disk = ((x - 20) ** 2 + (y - 15) ** 2 < 100).astype(np.uint8)
    Image.fromarray(disk).save(ones, format="JPEG", quality=75)
    with pytest.raises(Rejected, match="save masks as PNG"):
        decode_pair(png_bytes(_photo(3)), ones.getvalue())


def test_a_smaller_gray_mask_is_resized_before_it_is_cut():
    """Its soft edges say where the outline lies between its pixels."""
    y, x = np.mgrid[0:240, 0:180]
    truth = (x - 90) ** 2 / 60**2 + (y - 120) ** 2 / 100**2 < 1  # a person-sized ellipse
    half = Image.fromarray(truth.astype(np.uint8) * 255).resize((90, 120), Image.BILINEAR)
    decoded = decode_pair(png_bytes(_photo(1, 180, 240)), png_bytes(np.asarray(half)))
    got = _pixels(decoded.mask) > 127
    assert (got & truth).sum() / (got | truth).sum() > 0.995


def test_iphone_heic_photos_are_paired_and_stored_re_encoded(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    Image.fromarray(_photo(5)).save(data / "images" / "IMG_0001.HEIC")
    (data / "masks" / "IMG_0001.png").write_bytes(png_bytes(_mask()))
    listing = pairs.list_pairs([str(data)], "")
    [pair] = listing.pairs
    assert pair.id == "IMG_0001"
    with open(pair.image, "rb") as image, open(pair.mask, "rb") as mask:
        decoded = decode_pair(image.read(), mask.read())
    assert decoded.reencoded and Image.open(io.BytesIO(decoded.image)).format == "PNG"
    assert (decoded.width, decoded.height) == (W, H)


def test_a_flipped_photo_with_an_untagged_mask_is_used_and_reported():
    """Which grid such a mask was drawn on cannot be told; the report says where to look."""
    exif = Image.Exif()
    exif[0x0112] = 3  # shot upside down
    photo = _jpeg_bytes(_smooth(W, H), exif=exif)
    mask = png_bytes(_mask())
    decoded = decode_pair(photo, mask)
    assert decoded.note == ORIENTATION_NOTE
    np.testing.assert_array_equal(_pixels(decoded.mask) > 0, _mask() > 0)  # taken as upright
    tagged = io.BytesIO()  # a mask carrying the same tag turns with the photo: nothing to say
    Image.fromarray(_mask()).save(tagged, format="PNG", exif=exif)
    assert decode_pair(photo, tagged.getvalue()).note == ""

    counts = report_lib.CountOutcomes()
    accs = [counts.create_accumulator() for _ in range(2)]
    counts.add_input(accs[0], report_lib.usable("train", 0.3))
    counts.add_input(accs[0], report_lib.noted(ORIENTATION_NOTE, "b.jpg"))
    counts.add_input(accs[1], report_lib.noted(ORIENTATION_NOTE, "a.jpg"))
    report = report_lib.build_report(counts.merge_accumulators(accs), pairs.SPLITS, {})
    assert report["noted"] == {ORIENTATION_NOTE: {"count": 2, "examples": ["a.jpg", "b.jpg"]}}
    assert report["usable"] == 1 and report["skipped"] == 0


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_a_mask_drawn_on_the_sideways_grid_turns_with_the_photo(orientation):
    """Labelling tools that ignore EXIF draw on the stored grid; the stored
    mask must cover the same pixels as the upright photo, as Pillow turns it."""
    stored_grid = np.ascontiguousarray(_smooth(width=W, height=H))
    exif = Image.Exif()
    exif[0x0112] = orientation
    photo_bytes = _jpeg_bytes(stored_grid, exif=exif)
    mask_on_grid = _mask(W, H, (3, 2, 17, 11))  # off centre: a wrong turn moves it
    decoded = decode_pair(photo_bytes, png_bytes(mask_on_grid))
    assert (decoded.width, decoded.height) == (H, W)
    marked = Image.fromarray(mask_on_grid)
    with_exif = io.BytesIO()
    marked.save(with_exif, format="PNG", exif=exif)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(with_exif)))
    np.testing.assert_array_equal(_pixels(decoded.mask), upright)


def test_a_mask_with_the_photos_tag_but_upright_pixels_is_not_turned_twice():
    """Some tools copy the photo's EXIF onto a mask they drew on the upright photo."""
    exif = Image.Exif()
    exif[0x0112] = 6
    photo_bytes = _jpeg_bytes(np.ascontiguousarray(_smooth(width=W, height=H)), exif=exif)
    upright_mask = _mask(H, W, (3, 2, 17, 11))  # H wide, W tall: the upright photo's shape
    tagged = io.BytesIO()
    Image.fromarray(upright_mask).save(tagged, format="PNG", exif=exif)
    decoded = decode_pair(photo_bytes, tagged.getvalue())
    np.testing.assert_array_equal(_pixels(decoded.mask), upright_mask)
    assert decoded.note == ""


def test_a_turned_square_photo_with_an_untagged_mask_is_noted():
    exif = Image.Exif()
    exif[0x0112] = 6
    photo_bytes = _jpeg_bytes(np.ascontiguousarray(_smooth(width=W, height=W)), exif=exif)
    decoded = decode_pair(photo_bytes, png_bytes(_mask(W, W)))
    assert decoded.note == ORIENTATION_NOTE


def test_files_cut_before_their_end_marker_are_stored_whole():
    """Pillow reads a PNG without its IEND chunk; TensorFlow does not."""
    mask = png_bytes(_mask())
    whole = png_bytes(_photo(3))
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.decode_image(whole[:-12], channels=3)
    decoded = decode_pair(whole[:-12], mask)
    assert decoded.reencoded
    np.testing.assert_array_equal(tf.io.decode_image(decoded.image).numpy(), _photo(3))
    assert not decode_pair(whole, mask).reencoded


def test_photos_past_the_pixel_limit_are_too_large_not_unreadable(monkeypatch):
    """Ingestion opens what bgremove opens (phones shoot 200 MP, past Pillow's 179)
    and names what is larger for what it is."""
    from serving.images import MAX_OPENED_PIXELS

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    fn = DecodePairFn(max_side=0)
    fn.setup()
    assert 2 * Image.MAX_IMAGE_PIXELS == MAX_OPENED_PIXELS
    Image.MAX_IMAGE_PIXELS = (H * W) // 4  # this test's photos are then too large
    with pytest.raises(
        Rejected, match=r"^too_large: 0.0012 megapixels, above the limit of 0.0006"
    ) as error:
        decode_pair(png_bytes(_photo(1)), png_bytes(_mask()))
    assert error.value.reason == "too_large"


def test_an_empty_mask_says_what_it_holds():
    dark = np.where(_mask() > 127, 100, 40).astype(np.uint8)  # no level in the upper half
    with pytest.raises(Rejected, match=r"empty_mask: no foreground pixel \(mask values 40..100\)"):
        decode_pair(png_bytes(_photo(1)), png_bytes(dark))


def test_label_maps_count_every_class_and_part_as_the_person():
    """Parts drawn at 85 and 170 of 255 were trained as background, and a second
    person numbered 2 (instances 0/1/2) made the mask 'empty'; soft edges and 16-bit
    mattes are still cut at half their scale, not grown by their faintest pixels."""
    shape = _mask() > 127
    rows = np.arange(H)[:, None] * np.ones((1, W), int)
    parts = np.where(shape, np.select([rows < H // 3, rows < 2 * H // 3], [85, 170], 255), 0)
    np.testing.assert_array_equal(binarize_mask(Image.fromarray(parts.astype(np.uint8))), shape)
    instances = np.where(shape, np.where(rows < H // 2, 1, 2), 0).astype(np.uint8)
    np.testing.assert_array_equal(binarize_mask(Image.fromarray(instances)), shape)
    coloured = np.zeros((H, W, 3), np.uint8)  # parts in dark colours: every channel <= 127
    coloured[shape & (rows < H // 2)] = (100, 0, 0)
    coloured[shape & (rows >= H // 2)] = (0, 90, 60)
    np.testing.assert_array_equal(binarize_mask(Image.fromarray(coloured, "RGB")), shape)
    decoded = decode_pair(png_bytes(_photo(1)), png_bytes(parts.astype(np.uint8)))
    assert decoded.foreground_fraction == pytest.approx(shape.mean())

    # Anti-aliased edges (drawn 4x larger, averaged): up to 17 levels, along the outline.
    y, x = np.mgrid[0 : 4 * H, 0 : 4 * W]
    big = ((x - 80) ** 2 + (y - 60) ** 2 < 45**2).astype(np.float64) * 255
    smooth = big.reshape(H, 4, W, 4).mean(axis=(1, 3))
    levels = np.rint(smooth).astype(np.uint8)
    assert len(np.unique(levels)) > 10 and (levels > 0).sum() > (levels > 127).sum()
    np.testing.assert_array_equal(binarize_mask(Image.fromarray(levels)), levels > 127)
    matte = np.rint(smooth * 257).astype(np.uint16)  # the same, as a 16-bit PNG
    sixteen = Image.open(io.BytesIO(png_bytes(matte)))
    assert sixteen.mode.startswith("I")
    np.testing.assert_array_equal(binarize_mask(sixteen), matte > 32767)
    twelve = Image.open(io.BytesIO(png_bytes((shape * 4095).astype(np.uint16))))  # 12 bits
    np.testing.assert_array_equal(binarize_mask(twelve), shape)
    # A trimap's middle level is the unknown band between person and background.
    band = (levels > 0) & (levels < 255)
    trimap = np.where(levels == 255, 255, np.where(band, 127, 0)).astype(np.uint8)
    np.testing.assert_array_equal(binarize_mask(Image.fromarray(trimap)), trimap == 255)


def test_decode_rejects_with_reasons():
    good = png_bytes(_mask())
    with pytest.raises(Rejected) as error:
        decode_pair(png_bytes(_photo(1)), png_bytes(_mask(W + 20, H)))
    assert error.value.reason == "size_mismatch"
    with pytest.raises(Rejected) as error:
        decode_pair(png_bytes(_photo(1)), b"GIF89a junk")
    assert error.value.reason == "unreadable_mask"
    with pytest.raises(Rejected, match="the photo has 0 bytes") as error:
        decode_pair(b"", good)
    assert error.value.reason == "empty_file"
    with pytest.raises(Rejected, match="the mask has 0 bytes"):
        decode_pair(png_bytes(_photo(1)), b"")
    # A fully transparent PNG would train as a white photo labelled with a person.
    clear = np.zeros((H, W, 4), np.uint8)
    clear[..., :3] = _photo(2)
    with pytest.raises(Rejected) as error:
        decode_pair(png_bytes(clear), good)
    assert error.value.reason == "blank_image"
    assert decode_pair(png_bytes(_photo(2)), good).width == W  # its opaque twin is kept
