"""``bgremove`` end to end: real files, a real local server over a tiny exported model."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from serving.cli import main
from tests.serving_fixtures import encode_image

REPO = Path(__file__).resolve().parent.parent


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_with_a_broken_file_processes_the_rest(server, tmp_path, capsys):
    photos = tmp_path / "photos"
    _write(photos / "a.jpg", encode_image(48, 32))
    _write(photos / "a.png", encode_image(10, 10, "PNG", seed=2))  # same stem as a.jpg
    _write(photos / "trip" / "b.png", encode_image(20, 30, "PNG", seed=1))
    _write(photos / "broken.jpg", b"\xff\xd8 not really a jpeg")
    _write(photos / "notes.txt", b"not an image, not even tried")
    out = tmp_path / "out"

    code = main(["remove", str(photos), "-o", str(out), "--server", server, "-j", "2"])

    assert code == 1
    assert Image.open(out / "a.png").size == (48, 32)
    assert Image.open(out / "a.png").mode == "RGBA"
    assert Image.open(out / "trip" / "b.png").size == (20, 30)
    assert Image.open(out / "a.png.png").size == (10, 10)
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["a.png", "a.png.png", "b.png"]
    err = capsys.readouterr().err
    assert "3 processed" in err and "1 failed" in err
    assert "broken.jpg" in err and "a.jpg:" not in err

    code = main(["remove", str(photos), "-o", str(out), "--server", server, "-b", "white"])
    assert code == 1
    assert "3 skipped" in capsys.readouterr().err
    assert Image.open(out / "a.png").mode == "RGBA"  # skipped, not redone

    code = main(
        [
            "remove",
            str(photos),
            "-o",
            str(out),
            "--server",
            server,
            "--overwrite",
            "-b",
            "white",
            "--format",
            "jpg",
        ]
    )
    assert code == 1
    assert Image.open(out / "a.jpg").format == "JPEG"


def test_single_file_defaults_next_to_it_and_exif_is_applied(server, tmp_path, capsys):
    stored = Image.open(io.BytesIO(encode_image(40, 24)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    photo = tmp_path / "portrait.jpg"
    stored.save(photo, "JPEG", exif=exif)

    assert main(["remove", str(photo), "--server", server, "-b", "#00ff00"]) == 0
    result = Image.open(tmp_path / "portrait.nobg.png")
    assert (result.mode, result.size) == ("RGB", (24, 40))
    assert "portrait.nobg.png" in capsys.readouterr().err

    mask_path = tmp_path / "mask.webp"
    assert (
        main(
            [
                "remove",
                str(photo),
                "-o",
                str(mask_path),
                "--server",
                server,
                "--mask-only",
                "--threshold",
                "0.5",
            ]
        )
        == 0
    )
    mask = Image.open(mask_path)
    assert (mask.format, mask.size) == ("WEBP", (24, 40))
    assert set(np.unique(np.asarray(mask.convert("L")))) <= {0, 255}


def test_transparent_jpeg_is_refused_before_any_work(tmp_path, capsys):
    photo = _write(tmp_path / "p.jpg", encode_image(8, 8))
    code = main(["remove", str(photo), "-o", str(tmp_path / "x.jpg"), "--server", "127.0.0.1:1"])
    assert code == 2
    assert "-b white" in capsys.readouterr().err
    assert not (tmp_path / "x.jpg").exists()


def test_bad_background_is_a_usage_error(tmp_path, capsys):
    photo = _write(tmp_path / "p.jpg", encode_image(8, 8))
    assert main(["remove", str(photo), "-b", "plaid"]) == 2
    assert "unknown background 'plaid'" in capsys.readouterr().err


def _run_cli(*args: str, data: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving.cli", *args],
        input=data,
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )


def test_stdin_to_stdout(server):
    done = _run_cli("remove", "-", "--server", server, "-b", "blur", data=encode_image(36, 28))
    assert done.returncode == 0, done.stderr.decode()
    result = Image.open(io.BytesIO(done.stdout))
    assert (result.format, result.mode, result.size) == ("PNG", "RGB", (36, 28))


def test_server_down_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"  # closed again before the run
    photo = _write(tmp_path / "p.jpg", encode_image(8, 8))
    done = _run_cli("remove", str(photo), "--server", address)
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 2
    assert [line for line in lines if "error" in line.lower()] == lines[-1:]
    assert address in lines[-1] and "make serve" in lines[-1]
    assert "Traceback" not in done.stderr.decode()
    assert not (tmp_path / "p.nobg.png").exists()

    status = _run_cli("status", "--server", address)
    assert status.returncode == 2
    assert status.stderr.decode().strip().count("\n") == 0
    assert address in status.stderr.decode()


def test_status_lists_versions(server, capsys):
    assert main(["status", "--server", server]) == 0
    out = capsys.readouterr().out
    assert "version 1: AVAILABLE" in out
