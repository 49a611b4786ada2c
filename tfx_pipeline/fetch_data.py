"""Fetches the Kaggle "Segmentation Full Body TikTok Dancing" dataset (make data).

Needs Kaggle credentials: ~/.kaggle/kaggle.json or KAGGLE_USERNAME and
KAGGLE_KEY.  Without them it says where to get the data by hand.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

DATASET = "tapakah68/segmentation-full-body-tiktok-dancing-dataset"
API = "https://www.kaggle.com/api/v1/datasets/download/"


def credentials() -> tuple[str, str] | None:
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if user and key:
        return user, key
    path = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    if path.exists():
        data = json.loads(path.read_text())
        return data["username"], data["key"]
    return None


def dataset_root(extracted: Path) -> Path:
    """The folder holding images/ and masks/, wherever the archive nests it."""
    for images in sorted(extracted.rglob("images")):
        if images.is_dir() and (images.parent / "masks").is_dir():
            return images.parent
    raise FileNotFoundError(f"no images/ and masks/ folders in the archive ({extracted})")


def fetch(target: Path, auth: tuple[str, str]) -> Path:
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = urllib.request.Request(API + DATASET, headers={"Authorization": f"Basic {token}"})
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "dataset.zip"
        with urllib.request.urlopen(request, timeout=60) as response, open(archive, "wb") as f:
            shutil.copyfileobj(response, f)
        with zipfile.ZipFile(archive) as z:
            z.extractall(Path(tmp) / "x")
        root = dataset_root(Path(tmp) / "x")
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(root), target)
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0] if args else "data/tiktok")
    auth = credentials()
    if auth is None:
        print(
            f"No Kaggle credentials. Either put your API token in ~/.kaggle/kaggle.json "
            f"(kaggle.com > Settings > API > Create New Token) and run 'make data' again, or "
            f"download https://www.kaggle.com/datasets/{DATASET} by hand and unpack it so "
            f"that {target}/images and {target}/masks exist. Then: "
            f"make pipeline DATA_DIR={target}",
            file=sys.stderr,
        )
        return 2
    try:
        fetch(target, auth)
    except (urllib.error.URLError, OSError, zipfile.BadZipFile) as e:
        print(f"error: could not fetch {DATASET} from Kaggle: {e}", file=sys.stderr)
        return 1
    print(f"TikTok dancing dataset in {target}; run: make pipeline DATA_DIR={target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
