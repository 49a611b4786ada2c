"""``bgremove`` end to end: real files, a real local server over a tiny exported model."""

from __future__ import annotations

import errno
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
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
    assert Image.open(out / "a.jpg.png").size == (48, 32)
    assert Image.open(out / "a.jpg.png").mode == "RGBA"
    assert Image.open(out / "trip" / "b.png").size == (20, 30)
    assert Image.open(out / "a.png.png").size == (10, 10)
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert files == ["a.jpg.png", "a.png.png", "b.png"]
    err = capsys.readouterr().err
    assert "3 processed" in err and "1 failed" in err
    assert "broken.jpg" in err and "a.jpg:" not in err

    code = main(["remove", str(photos), "-o", str(out), "--server", server, "-b", "white"])
    assert code == 1
    assert "3 skipped" in capsys.readouterr().err
    assert Image.open(out / "a.jpg.png").mode == "RGBA"  # skipped, not redone

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
    assert Image.open(out / "a.jpg.jpg").format == "JPEG"


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
    assert len(lines) == 1 and "error" in lines[0]  # no "0 processed" line before it
    assert address in lines[0] and "make serve" in lines[0]
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


def test_status_fails_only_for_a_failed_version_newer_than_what_serves(server, monkeypatch):
    from serving.client import BackgroundRemover, VersionStatus

    failed = VersionStatus(3, "END", "UNKNOWN", "Failed to load version 3")
    for versions, code in [
        ([failed, VersionStatus(2, "AVAILABLE")], 1),  # the push did not go live
        ([VersionStatus(4, "AVAILABLE"), failed], 0),  # an old failure, fixed by a newer push
        ([failed], 1),
    ]:
        monkeypatch.setattr(BackgroundRemover, "status", lambda self, v=versions: v)
        assert main(["status", "--server", server]) == code, versions


def test_the_output_never_replaces_a_photo(tmp_path, capsys):
    photo = _write(tmp_path / "photos" / "a.png", encode_image(8, 8, "PNG"))
    before = photo.read_bytes()
    code = main(["remove", str(photo), "-o", str(photo), "--overwrite", "--server", "x:1"])
    assert code == 1 and photo.read_bytes() == before
    assert "would replace the photo" in capsys.readouterr().err

    folder = str(tmp_path / "photos")
    assert main(["remove", folder, "-o", folder, "--server", "x:1"]) == 2
    assert "holds the input folder" in capsys.readouterr().err
    assert main(["remove", folder, "-o", str(tmp_path / "cut.png"), "--server", "x:1"]) == 2
    assert "the output is a folder" in capsys.readouterr().err
    assert not (tmp_path / "cut.png").exists() and photo.read_bytes() == before


def test_photos_with_one_stem_keep_the_suffix(server, tmp_path):
    first = _write(tmp_path / "a.jpg", encode_image(8, 8))
    second = _write(tmp_path / "a.png", encode_image(8, 8, "PNG", seed=1))
    assert main(["remove", str(first), str(second), "--server", server]) == 0
    names = sorted(p.name for p in tmp_path.glob("*.nobg.png"))
    assert names == ["a.jpg.nobg.png", "a.png.nobg.png"]


def test_a_photo_named_twice_is_done_once_and_case_twins_are_told_apart(
    server, tmp_path, monkeypatch
):
    """a.jpg ./a.jpg failed one of its two writes, and a.jpg beside A.jpg took every
    folder up to / into its name: '-tmp-...-a.jpg.png', which rm reads as options."""
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "a.jpg", encode_image(8, 8))
    assert main(["remove", "a.jpg", "./a.jpg", str(tmp_path / "a.jpg"), "--server", server]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["a.nobg.png"]

    _write(tmp_path / "x" / "A.jpg", encode_image(8, 8, seed=1))
    _write(tmp_path / "x" / "a.jpg", encode_image(8, 8, seed=2))
    out = tmp_path / "out"
    assert main(["remove", "x", "-o", str(out), "--server", server]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert [re.sub(r"-[0-9a-f]{6}\.", "-#.", n) for n in names] == ["A.jpg-#.png", "a.jpg-#.png"]
    _write(tmp_path / "x" / "A.JPG", encode_image(8, 8, seed=3))  # a third twin later
    assert main(["remove", "x", "-o", str(out), "--server", server]) == 0
    after = sorted(p.name for p in out.iterdir())
    assert len(after) == 3 and set(names) < set(after)  # the first two kept their names


def test_an_output_file_named_with_o_is_replaced(server, tmp_path):
    """A script reusing one -o name got the first photo's cut-out again, exit 0."""
    first = _write(tmp_path / "a.jpg", encode_image(8, 8))
    second = _write(tmp_path / "b.jpg", encode_image(12, 10, seed=1))
    out = tmp_path / "cut.png"
    assert main(["remove", str(first), "-o", str(out), "--server", server]) == 0
    assert main(["remove", str(second), "-o", str(out), "--server", server]) == 0
    assert Image.open(out).size == (12, 10)
    done = _run_cli("remove", "-", "-o", str(out), "--server", server, data=encode_image(6, 9))
    assert done.returncode == 0, done.stderr.decode()
    assert Image.open(out).size == (6, 9)


def test_hidden_files_and_folders_are_left_out(server, tmp_path, capsys):
    """macOS's ._a.jpg beside each photo copied to a USB drive failed the batch (exit 1)."""
    photos = tmp_path / "photos"
    _write(photos / "a.jpg", encode_image(8, 8))
    _write(photos / "._a.jpg", b"\0\5\26\7 AppleDouble resource fork")
    _write(photos / ".thumbnails" / "a.jpg", encode_image(4, 4))
    out = tmp_path / "out"
    assert main(["remove", str(photos), "-o", str(out), "--server", server]) == 0
    assert [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()] == ["a.png"]
    assert "._a.jpg" not in capsys.readouterr().err


def test_several_folders_into_one_output_keep_their_names(server, tmp_path):
    _write(tmp_path / "x" / "p.png", encode_image(8, 8, "PNG"))
    _write(tmp_path / "y" / "p.png", encode_image(8, 8, "PNG", seed=1))
    out = tmp_path / "out"
    assert (
        main(
            ["remove", str(tmp_path / "x"), str(tmp_path / "y"), "-o", str(out)]
            + ["--server", server]
        )
        == 0
    )
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["x/p.png", "y/p.png"]


def test_impossible_numbers_and_addresses_are_usage_errors(tmp_path, capsys):
    photo = _write(tmp_path / "p.jpg", encode_image(8, 8))
    cases = {
        ("--feather", "inf"): "--feather must be 0..1000",  # Pillow crashes on an infinite blur
        ("-b", "blur:1e308"): "blur radius must be",
        ("--timeout", "-5"): "--timeout must be a positive",
        ("--server", "http://localhost:8500"): "not a URL",
        ("--server", "8500"): "give host:port",
        ("-j", "300"): "--jobs must be 1..64",  # the queue outlasted the timeout
        ("--mask-only", "-b", "blur"): "leave out -b",  # it was ignored without a word
    }
    for args, message in cases.items():
        server = [] if "--server" in args else ["--server", "localhost:1"]
        assert main(["remove", str(photo), *args, *server]) == 2, args
        assert message in capsys.readouterr().err, args
    assert not (tmp_path / "p.nobg.png").exists()
    assert main(["status", "--server", ""]) == 2
    assert "give host:port" in capsys.readouterr().err


def test_unwritable_output_and_unreadable_stdin_read_plainly(server, tmp_path, capsys):
    photo = _write(tmp_path / "p.jpg", encode_image(8, 8))
    blocked = tmp_path / "p.jpg" / "x.png"  # its folder would be a file
    assert main(["remove", str(photo), "-o", str(blocked), "--server", server]) == 1
    err = capsys.readouterr().err
    assert f"cannot write {blocked}: {photo} is a file, not a folder" in err
    assert ".part" not in err

    done = _run_cli("remove", "-", "--server", server, data=b"hello")
    assert done.returncode == 1
    assert "-: not a readable image (unknown image format)" in done.stderr.decode()


def test_an_option_before_the_command_says_where_it_goes(capsys):
    assert main(["--server", "localhost:1", "status"]) == 2
    assert "--server goes after the command, e.g. bgremove status" in capsys.readouterr().err


def test_an_empty_folder_is_a_failure(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["remove", str(tmp_path / "empty")]) == 1
    assert "no images found" in capsys.readouterr().err


def test_rollout_refuses_a_binary_config_in_one_line(tmp_path, capsys):
    photo = _write(tmp_path / "p.jpg", encode_image(8, 8))
    assert main(["rollout", "show", "--config-file", str(photo)]) == 2
    assert "is not a text file" in capsys.readouterr().err


def test_photos_over_20_megapixels_go_two_at_a_time(tmp_path, monkeypatch):
    from serving import cli, remove_batch

    photos = tmp_path / "photos"
    for n in range(4):
        _write(photos / f"big{n}.png", encode_image(10, 10, "PNG", seed=n))
    monkeypatch.setattr(remove_batch, "BIG_PHOTO_PIXELS", 50)  # every 10x10 photo counts as big
    at_once, peak, count = [0], [0], threading.Condition()

    class Remover:  # counts how many photos are in flight at once
        def remove(self, *args):
            with count:
                at_once[0] += 1
                peak[0] = max(peak[0], at_once[0])
                count.notify_all()
                # Stays until all four are in flight, or a second shows none will join.
                count.wait_for(lambda: at_once[0] == 4, timeout=1.0)
                at_once[0] -= 1
            return Image.new("RGBA", (10, 10))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(cli, "_remover", lambda args: Remover())
    assert cli.main(["remove", str(photos), "-o", str(tmp_path / "out"), "-j", "4"]) == 0
    assert peak[0] == 2 and len(list((tmp_path / "out").glob("*.png"))) == 4
    peak[0] = 0
    monkeypatch.setattr(remove_batch, "BIG_PHOTO_PIXELS", 10_000)
    assert cli.main(["remove", str(photos), "-o", str(tmp_path / "out2"), "-j", "4"]) == 0
    assert peak[0] == 4  # small photos go as many at once as --jobs
    peak[0] = 0
    monkeypatch.setattr(remove_batch, "BIG_PHOTO_PIXELS", 50)
    # Every one is huge now: one at a time.
    monkeypatch.setattr(remove_batch, "HUGE_PHOTO_PIXELS", 50)
    assert cli.main(["remove", str(photos), "-o", str(tmp_path / "out3"), "-j", "4"]) == 0
    assert peak[0] == 1 and len(list((tmp_path / "out3").glob("*.png"))) == 4


def test_same_named_photos_from_several_folders_all_keep_an_output(server, tmp_path):
    sources = [
        _write(tmp_path / f"cam{n}" / "IMG_0001.JPG", encode_image(8 + n, 8)) for n in range(3)
    ]
    out = tmp_path / "out"
    args = ["remove", *map(str, sources), "-o", f"{out}/", "--server", server, "-j", "3"]
    assert main(args) == 0
    widths = {p.name: Image.open(p).width for p in out.glob("*.png")}
    assert widths == {
        "cam0-IMG_0001.JPG.png": 8,
        "cam1-IMG_0001.JPG.png": 9,
        "cam2-IMG_0001.JPG.png": 10,
    }

    # A photo added later gets its own output; none is handed another photo's.
    _write(tmp_path / "cam3" / "IMG_0001.jpeg", encode_image(11, 8))
    assert main([*args[:4], str(tmp_path / "cam3" / "IMG_0001.jpeg"), *args[4:]]) == 0
    assert Image.open(out / "IMG_0001.jpeg.png").width == 11
    assert not list(out.glob(".*.part"))


def test_folders_search_linked_folders_and_report_broken_links(server, tmp_path, capsys):
    photos = tmp_path / "photos"
    _write(tmp_path / "elsewhere" / "b.png", encode_image(9, 9, "PNG"))
    _write(photos / "a.png", encode_image(8, 8, "PNG"))
    (photos / "linked").symlink_to(tmp_path / "elsewhere")
    (photos / "loop").symlink_to(photos)  # searched once, not forever
    (photos / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    (photos / "usbtrip").symlink_to(tmp_path / "unmounted")  # a folder link to nothing
    Image.open(io.BytesIO(encode_image(12, 10))).save(photos / "iphone.heic")
    Image.open(io.BytesIO(encode_image(14, 10))).save(photos / "web.avif")
    out = tmp_path / "out"

    assert main(["remove", str(photos), "-o", str(out), "--server", server]) == 1
    sizes = {str(p.relative_to(out)): Image.open(p).size for p in out.rglob("*.png")}
    assert sizes == {
        "a.png": (8, 8),
        "linked/b.png": (9, 9),
        "iphone.png": (12, 10),
        "web.png": (14, 10),
    }
    err = capsys.readouterr().err
    assert "4 processed, 2 failed" in err and "gone.jpg: a link to nothing" in err
    assert "usbtrip: a link to nothing" in err


@pytest.mark.timeout(120)
def test_a_pipe_named_like_a_photo_is_reported_not_read(server, tmp_path, capsys):
    """Reading a named pipe blocks until something writes to it: never, here."""
    photos = tmp_path / "photos"
    _write(photos / "a.png", encode_image(8, 8, "PNG"))
    os.mkfifo(photos / "camera.jpg")
    os.mkfifo(photos / "notes.txt")  # not named like a photo: not ours to mention
    assert main(["remove", str(photos), "-o", str(tmp_path / "out"), "--server", server]) == 1
    err = capsys.readouterr().err
    assert "1 processed, 1 failed" in err and "camera.jpg: not a regular file" in err
    assert main(["remove", str(photos / "camera.jpg"), "--server", server]) == 1
    assert "camera.jpg: not a regular file" in capsys.readouterr().err


def test_a_camera_jpeg_with_a_preview_is_one_photo():
    from serving import images

    photo, preview = (Image.open(io.BytesIO(encode_image(w, 8))) for w in (16, 4))
    buffer = io.BytesIO()
    photo.save(buffer, "MPO", save_all=True, append_images=[preview])
    assert Image.open(io.BytesIO(buffer.getvalue())).n_frames == 2  # as cameras write them
    assert images.header(buffer.getvalue()) == (16 * 8, 1)


def test_short_writes_are_finished_and_a_full_output_is_an_error():
    from serving.output_writer import write_all

    class Stream:  # takes 5 bytes per write, then reports a full disk
        def __init__(self, room: int) -> None:
            self.data, self.room = b"", room

        def write(self, data) -> int:
            if len(self.data) >= self.room:
                raise OSError(errno.ENOSPC, "No space left on device")
            taken = bytes(data[:5])
            self.data += taken
            return len(taken)

        def flush(self) -> None:
            pass

    roomy = Stream(100)
    write_all(roomy, memoryview(b"0123456789abc"))
    assert roomy.data == b"0123456789abc"
    with pytest.raises(OSError, match="No space"):
        write_all(Stream(10), memoryview(b"0123456789abc"))


def test_animations_use_their_first_frame_and_say_so(server, tmp_path, capsys):
    frames = [Image.open(io.BytesIO(encode_image(10, 8, seed=n))) for n in range(3)]
    anim = tmp_path / "anim.gif"
    frames[0].save(anim, save_all=True, append_images=frames[1:])
    assert main(["remove", str(anim), "--server", server]) == 0
    assert "(the first of its 3 frames only)" in capsys.readouterr().err
    assert Image.open(tmp_path / "anim.nobg.png").size == (10, 8)
    # Piped through, the photo goes to stdout and the note still reaches stderr.
    done = _run_cli("remove", "-", "--server", server, data=anim.read_bytes())
    assert done.returncode == 0 and Image.open(io.BytesIO(done.stdout)).size == (10, 8)
    assert "note: the first of its 3 frames only" in done.stderr.decode()


def test_closed_or_terminal_standard_streams_are_refused_or_kept_apart(server, tmp_path):
    """Started with stderr closed, the note landed inside the PNG on stdout; with stdout
    closed it was a traceback; stdin from a terminal waited for typing, saying nothing."""
    import pty

    frames = [Image.open(io.BytesIO(encode_image(10, 8, seed=n))) for n in range(2)]
    anim = tmp_path / "anim.gif"
    frames[0].save(anim, save_all=True, append_images=frames[1:])
    cli = f"{sys.executable} -m serving.cli remove {anim} --server {server} -o -"

    def shell(line: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-c", line], cwd=REPO, capture_output=True, timeout=120, check=False
        )

    done = shell(f"{cli} 2>&-")
    assert done.returncode == 0 and b"bgremove" not in done.stdout
    assert Image.open(io.BytesIO(done.stdout)).size == (10, 8)  # nothing after the PNG
    done = shell(f"{cli} >&-")
    assert (
        done.returncode == 2 and b"standard output" in done.stderr and b"Trace" not in done.stderr
    )

    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "serving.cli", "remove", "-", "-o", str(tmp_path / "x.png")],
            stdin=terminal, cwd=REPO, capture_output=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        os.close(controller)
        os.close(terminal)
    assert done.returncode == 2 and b"stdin, which is a terminal" in done.stderr


def test_names_print_as_one_line_without_terminal_escapes(server, tmp_path, capsys):
    photos = tmp_path / "photos"
    for name in ("new\nline.jpg", "\x1b[31mred.jpg"):
        _write(photos / name, b"not a photo")
    assert main(["remove", str(photos), "-o", str(tmp_path / "out"), "--server", server]) == 1
    err = capsys.readouterr().err
    assert "\x1b[" not in err and "new\\nline.jpg: " in err and "\\x1b[31mred.jpg: " in err
    assert len(err.strip().splitlines()) == 3


def test_closed_stdin_is_said_plainly(server):
    done = subprocess.run(
        [sys.executable, "-m", "serving.cli", "remove", "-", "--server", server],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=REPO,
        timeout=120,
        preexec_fn=lambda: os.close(0),
    )
    assert done.returncode == 1
    assert "no standard input to read the photo from" in done.stderr.decode()


def test_colour_profile_and_dpi_reach_every_output_format(server, tmp_path):
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    photo = tmp_path / "p.jpg"
    Image.open(io.BytesIO(encode_image(12, 10))).save(photo, icc_profile=profile, dpi=(300, 300))
    for name in ("out.jpg", "out.webp", "out.png"):
        assert (
            main(
                ["remove", str(photo), "-o", str(tmp_path / name), "-b", "white"]
                + ["--server", server]
            )
            == 0
        )
        written = Image.open(tmp_path / name)
        assert written.info.get("icc_profile") == profile, name
    assert Image.open(tmp_path / "out.jpg").info["dpi"] == (300, 300)


def test_a_full_disk_stops_the_batch_after_one_photo(server, tmp_path, capsys, monkeypatch):
    from serving import output_writer, remove_batch

    photos = tmp_path / "photos"
    for n in range(6):
        _write(photos / f"p{n}.png", encode_image(8, 8, "PNG", seed=n))

    def full(image, task):
        raise output_writer.WriteError(
            errno.ENOSPC, f"cannot write {task.dest}: No space left on device"
        )

    monkeypatch.setattr(remove_batch, "save", full)
    code = main(["remove", str(photos), "-o", str(tmp_path / "out"), "--server", server, "-j", "1"])
    err = capsys.readouterr().err
    assert code == 1
    # The one worker may have taken the next photo before the first failure was seen.
    assert re.search(r"0 processed, (1 failed, 5|2 failed, 4) not attempted", err), err
    assert err.strip().splitlines()[-1].endswith("No space left on device")


def test_a_folder_that_may_not_be_written_to_fails_its_photos_unsent(
    server, tmp_path, capsys, monkeypatch
):
    """Photos whose outputs go beside them in a locked folder fail before they are
    sent; the other folders of the batch go on. (Root may write anywhere, so the
    permission check is what is faked here.)"""
    from serving import remove_batch

    for folder in ("locked", "free"):
        for n in range(3):
            _write(tmp_path / folder / f"p{n}.png", encode_image(8, 8, "PNG", seed=n))
    real_access = os.access
    monkeypatch.setattr(
        remove_batch.os, "access", lambda p, m: "locked" not in str(p) and real_access(p, m)
    )
    sent = []
    monkeypatch.setattr(remove_batch.images, "header", lambda s: sent.append(s) or (64, 1))
    photos = sorted(str(p) for p in tmp_path.glob("*/p*.png"))
    code = main(["remove", *photos, "--server", server])
    err = capsys.readouterr().err
    assert code == 1 and "3 processed, 3 failed" in err and "not attempted" not in err, err
    assert err.count("may not be written to") == 3
    assert sorted(p.parent.name for p in sent) == ["free"] * 3
    assert len(list((tmp_path / "free").glob("*.nobg.png"))) == 3


def test_a_hung_server_stops_the_batch_after_two_rounds_of_timeouts(
    server, tmp_path, capsys, monkeypatch
):
    """Else 1000 photos at the default 30 s timeout took hours before anyone heard."""
    import grpc

    from serving import remove_batch
    from serving.client import RequestFailed

    photos = tmp_path / "photos"
    for n in range(12):
        _write(photos / f"p{n:02}.png", encode_image(8, 8, "PNG", seed=n))

    def hung(task, *_):
        time.sleep(0.2)  # a real timeout takes 3 s
        raise RequestFailed("did not answer within 3s", grpc.StatusCode.DEADLINE_EXCEEDED)

    monkeypatch.setattr(remove_batch, "_process", hung)
    argv = ["remove", str(photos), "-o", str(tmp_path / "out"), "--server", server]
    assert main([*argv, "-j", "1", "--timeout", "3"]) == 2
    err = capsys.readouterr().err
    # Three timeouts in a row with one job; the worker may have taken one more.
    assert re.search(r"0 processed, (3 failed, 9|4 failed, 8) not attempted", err), err
    assert "answered none of the last 3 photos within 3s" in err.splitlines()[-1]


def test_stdout_that_takes_no_more_bytes_is_an_error_not_a_cut_file(server):
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [sys.executable, "-m", "serving.cli", "remove", "-", "--server", server],
            input=encode_image(16, 16),
            stdout=full,
            stderr=subprocess.PIPE,
            cwd=REPO,
            timeout=120,
        )
    assert done.returncode == 1
    assert "cannot write to stdout: No space left on device" in done.stderr.decode()


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_stops_like_ctrl_c_and_counts_what_is_left(server, tmp_path, signum, code):
    photos = tmp_path / "photos"
    for n in range(300):
        _write(photos / f"p{n:03}.png", encode_image(8, 8, "PNG", seed=n))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.cli", "remove", str(photos), "-o", str(out)]
        + ["--server", server, "-j", "2"],
        cwd=REPO,
        stderr=subprocess.PIPE,
        # A shell's background job starts with Ctrl-C ignored; a terminal's does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not list(out.glob("*.png")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == code, err
    assert err.strip().endswith("bgremove: interrupted")
    counts = re.search(r"(\d+) processed, 0 failed, (\d+) not attempted", err)
    assert counts, err
    processed, left = map(int, counts.groups())
    written = list(out.glob("*.png"))
    assert processed == len(written) and processed + left == 300  # every photo told for
    assert not list(out.glob(".*.part"))
    assert all(Image.open(p).size == (8, 8) for p in written)  # none half-written


def test_output_and_background_mistakes_say_what_to_do(tmp_path, capsys, monkeypatch):
    photo = _write(tmp_path / "p.jpg", encode_image(8, 8))
    assert main(["remove", str(photo), "-o", str(tmp_path / "cutouts"), "--server", "x:1"]) == 2
    assert f"end it with /: {tmp_path / 'cutouts'}/" in capsys.readouterr().err
    assert main(["remove", str(photo), "-b", "nosuch.jpg", "--server", "x:1"]) == 2
    assert "background image 'nosuch.jpg': no such file" in capsys.readouterr().err
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["remove", str(photo), "-o", "-", "--server", "x:1"]) == 2
    assert "redirect stdout" in capsys.readouterr().err
