"""bgremove's options that pick the model and shape the mask, against a real local server
whose versions answer masks known in advance."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving import defaults
from serving.cli import main
from serving.client import BackgroundRemover
from tests.serving_fixtures import (
    encode_image,
    export_fixed_mask_model,
    start_local_server,
    wait_for,
)

REPO = Path(__file__).resolve().parents[1]
# As large as a real mask is to its window: a guided filter smooths an 8x8 one flat.
LEFT_HALF = np.where(np.arange(64) < 32, 255, 0).astype(np.uint8)[None].repeat(64, axis=0)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Version 1 (stable) sees nobody; version 2 (canary) a person on the left half."""
    serving_dir = tmp_path_factory.mktemp("labelled")
    export_fixed_mask_model(serving_dir / defaults.MODEL_NAME / "1", 0)
    export_fixed_mask_model(serving_dir / defaults.MODEL_NAME / "2", LEFT_HALF)
    server = start_local_server(serving_dir, max_versions=2, labels={"stable": 1, "canary": 2})
    wait_for(lambda: server.store.served_versions() == [1, 2])
    yield server.address
    server.stop(grace=0)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "p.png"
    path.write_bytes(encode_image(64, 48, "PNG"))
    return path


def _mask(address: str, photo: Path, out: Path, *options: str) -> np.ndarray:
    argv = ["remove", str(photo), "--mask-only", "-o", str(out), "--server", address]
    assert main([*argv, *options]) == 0
    return np.asarray(Image.open(out).convert("L"))


@pytest.mark.parametrize(
    "options, person",
    [
        ([], True),  # no choice: the highest version, as TF Serving picks
        (["--label", "stable"], False),
        (["--label", "canary"], True),
        (["--version", "1"], False),
        (["--version", "2"], True),
    ],
)
def test_version_and_label_pick_the_model_that_answers(labelled, photo, tmp_path, options, person):
    mask = _mask(labelled, photo, tmp_path / "m.png", "--no-refine", *options)
    assert bool(mask[:, :8].min() == 255) is person
    assert mask[:, -8:].max() == 0


def test_status_of_one_version_lists_that_version_alone(labelled, capsys):
    assert main(["status", "--version", "1", "--server", labelled]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["version 1"]


def test_an_unknown_label_is_one_line_and_exit_2(labelled, photo, capsys):
    assert main(["remove", str(photo), "--label", "nosuch", "--server", labelled]) == 2
    err = capsys.readouterr().err.strip()
    assert "nosuch" in err and "\n" not in err


def test_threshold_gives_a_hard_edge_and_feather_softens_it(labelled, photo, tmp_path):
    def alpha(*options: str) -> np.ndarray:
        out = tmp_path / "cut.png"
        argv = ["remove", str(photo), "-o", str(out), "--label", "canary", "--server", labelled]
        assert main([*argv, *options]) == 0
        return np.asarray(Image.open(out).getchannel("A"))

    soft = alpha()
    hard = alpha("--threshold", "0.5")
    feathered = alpha("--threshold", "0.5", "--feather", "4")
    between = (hard > 0) & (hard < 255)
    assert np.any((soft > 0) & (soft < 255))  # the model's own soft edge, upsampled
    assert not between.any() and hard[:, :16].min() == 255 and hard[:, -16:].max() == 0
    assert np.count_nonzero((feathered > 0) & (feathered < 255)) >= 4 * hard.shape[0]


def test_no_refine_upsamples_the_mask_bilinearly(server, tmp_path):
    """The session's tiny model gives an uneven mask: refining follows the photo instead."""
    photo = tmp_path / "p.png"
    photo.write_bytes(encode_image(96, 72, "PNG", seed=3))
    plain = _mask(server, photo, tmp_path / "plain.png", "--no-refine")
    refined = _mask(server, photo, tmp_path / "refined.png")
    with BackgroundRemover(server, refine=False) as remover:
        expected = np.asarray(remover.mask(str(photo)))
    np.testing.assert_array_equal(plain, expected)
    assert np.abs(refined.astype(int) - plain.astype(int)).max() > 0


def test_the_server_comes_from_bgremove_server_when_not_given(server, photo):
    env = {**os.environ, "BGREMOVE_SERVER": server}
    done = subprocess.run(
        [sys.executable, "-m", "serving.cli", "remove", str(photo)],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert Image.open(photo.with_name("p.nobg.png")).size == (64, 48)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-", "other.jpg"], "- (stdin) must be the only input"),
        (["a.jpg", "b.jpg", "-o", "-"], "-o - (stdout) takes exactly one input photo"),
        (["a.jpg", "b.jpg", "-o", "taken.png"], "-o taken.png: must be a folder"),
        (["a.jpg", "b.jpg", "-o", "new.png"], "so the output is a folder"),
    ],
)
def test_inputs_and_outputs_that_do_not_fit_are_usage_errors(
    tmp_path, monkeypatch, capsys, argv, message
):
    monkeypatch.chdir(tmp_path)
    for name in ("a.jpg", "b.jpg", "taken.png"):
        Path(name).write_bytes(encode_image(8, 8))
    assert main(["remove", *argv, "--server", "127.0.0.1:1"]) == 2
    assert message in capsys.readouterr().err
    assert sorted(os.listdir()) == ["a.jpg", "b.jpg", "taken.png"]  # nothing written


def test_a_photo_named_like_an_option_gets_a_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("-dash.jpg").write_bytes(encode_image(8, 8))
    assert main(["remove", "-dash.jpg", "--server", "127.0.0.1:1"]) == 2
    assert "hint: -dash.jpg is a file; put -- before names" in capsys.readouterr().err
    assert main(["remove", "--nosuchflag", "--server", "127.0.0.1:1"]) == 2
    assert "hint" not in capsys.readouterr().err
    # Parsed as -o ld.jpg, it would have written a.jpg's cut-out to ld.jpg.
    Path("a.jpg").write_bytes(encode_image(8, 8))
    Path("-old.jpg").write_bytes(encode_image(8, 8))
    assert main(["remove", "a.jpg", "-old.jpg", "--server", "127.0.0.1:1"]) == 2
    assert "error: -old.jpg is a file; put -- before" in capsys.readouterr().err
    assert not Path("ld.jpg").exists()
