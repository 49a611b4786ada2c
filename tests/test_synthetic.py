"""The synthetic sample set: right layout, exact masks, deterministic, fast, ingestible."""

from __future__ import annotations

import csv
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from components import pairs
from components.decode import decode_pair
from tfx_pipeline.synthetic import generate


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def test_layout_masks_and_ids(tmp_path):
    ids = generate(tmp_path, 30, seed=3, size=(96, 64))
    assert len(ids) == len(set(ids)) == 30
    assert all(re.fullmatch(r"vid\d{3}_\d{4}", i) for i in ids)
    assert len({pairs.group_key(i, r"^(.+)_\d+$") for i in ids}) >= 3  # several videos
    with open(tmp_path / "df.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["images"]).stem for r in rows] == ids
    for row in rows:
        image = Image.open(tmp_path / row["images"])
        mask = np.asarray(Image.open(tmp_path / row["masks"]))
        assert image.size == (96, 64) and image.mode == "RGB"
        assert mask.shape == (64, 96) and set(np.unique(mask)) == {0, 255}
        assert 0.02 < (mask > 0).mean() < 0.6


def test_people_differ_from_their_background(tmp_path):
    """The mask marks something visible: pixel colours differ inside and outside it."""
    generate(tmp_path, 12, seed=1)
    for image_path in sorted((tmp_path / "images").iterdir()):
        image = np.asarray(Image.open(image_path), np.float32)
        mask = np.asarray(Image.open(tmp_path / "masks" / f"{image_path.stem}.png")) > 0
        inside, outside = image[mask].mean(axis=0), image[~mask].mean(axis=0)
        edge = np.abs(image[mask].std(axis=0) - image[~mask].std(axis=0))
        assert np.abs(inside - outside).max() > 8 or edge.max() > 8


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    generate(tmp_path / "a", 10, seed=7)
    generate(tmp_path / "b", 10, seed=7)
    generate(tmp_path / "c", 10, seed=8)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_every_pair_ingestible(tmp_path):
    generate(tmp_path, 120, seed=0, size=(160, 128))
    listing = pairs.list_pairs([str(tmp_path)], r"^(.+)_\d+$")
    assert len(listing.pairs) == 120 and not listing.skipped
    split = pairs.assign_splits(listing.pairs, 0.2, r"^(.+)_\d+$")
    assert set(split.values()) == set(pairs.SPLITS)
    for pair in listing.pairs[:20]:
        decoded = decode_pair(Path(pair.image).read_bytes(), Path(pair.mask).read_bytes())
        assert (decoded.width, decoded.height) == (160, 128) and not decoded.reencoded


def test_command_line(tmp_path):
    command = [sys.executable, "-m", "tfx_pipeline.synthetic", str(tmp_path)]
    result = subprocess.run(
        [*command, "--count", "5", "--size", "64x48"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote 5 pairs" in result.stdout
    assert len(list((tmp_path / "masks").glob("*.png"))) == 5
    assert Image.open(next((tmp_path / "images").iterdir())).size == (64, 48)
