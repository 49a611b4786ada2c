"""``bgremove``: remove the background behind people in photos via a model server.

Only the standard library is imported at start-up so that ``--help`` is instant;
numpy, Pillow and gRPC are imported by the subcommands that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import os
import re
import select
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from serving import defaults
from serving.errors import BackgroundRemoverError

if TYPE_CHECKING:
    from PIL import Image

    from serving.client import BackgroundRemover
    from serving.compositing import Background

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
DEFAULT_SUFFIX = ".nobg"
STDIO = "-"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Write errors that every later photo would meet too: the batch stops.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
# Targets gRPC resolves itself (https://grpc.github.io/grpc/core/md_doc_naming.html).
GRPC_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:")

DESCRIPTION = """Remove the background behind people in photos.

The photos are sent (downscaled) to a TF Serving compatible model server, which
returns a person mask; the result is composited here at the photo's full size."""

REMOVE_EPILOG = f"""outputs:
  one file, no -o        PHOTO{DEFAULT_SUFFIX}.png next to PHOTO.jpg
  one file, -o FILE      FILE; its extension (.png, .jpg, .webp) picks the format
  a folder, no -o        FOLDER{DEFAULT_SUFFIX}/ beside it, same relative paths and stems
  -o DIR                 DIR/<relative path>/<stem>.png (or --format);
                         several folders: DIR/<folder>/<relative path>/<stem>.png
  -                      read the photo from stdin, write the result to stdout
Photos with one output name (photo.jpg and photo.png, or IMG_0001.JPG from several
folders into one -o) each keep their whole name: photo.jpg.nobg.png and
photo.png.nobg.png, then their folder's name in front: cam2-IMG_0001.JPG.png.
Existing outputs are skipped unless --overwrite (a rerun resumes a batch); one
file named with -o FILE is replaced.
JPEG cannot hold transparency: use -b white (or another background) or
--mask-only for .jpg outputs.  Animations and multi-page files give their first
frame, and say so.

folders are searched for: {" ".join(defaults.PHOTO_EXTENSIONS)}
(any letter case), leaving out hidden files and folders (.name, macOS's ._name);
a file whose name starts with - is given after --.

exit status: 0 all done, 1 some photos failed (listed at the end), none found or
             the disk filled up (the rest are counted as not attempted),
             2 usage error, model server unreachable or answering nothing in time
             (two rounds of --jobs timeouts in a row), 130/143 interrupted
             (Ctrl-C/SIGTERM: photos being written finish, none is left half-written).

examples:
  bgremove remove photo.jpg                       photo.nobg.png, transparent
  bgremove remove photos/ -o cutouts/ -b white -j 8
  bgremove remove photo.jpg -o card.jpg -b '#1e90ff' --feather 2
  cat photo.jpg | bgremove remove - -b blur:25 > portrait.png"""


# Photos this large go at most two at a time, whatever --jobs says: four 54-megapixel
# photos at -j 4 peaked at 5.5 GB, two at a time at 4.5 GB in the same time (one at a
# time: 3.4 GB, but 1.7x slower).
BIG_PHOTO_PIXELS = 20_000_000
_BIG_PHOTOS = threading.Semaphore(2)
# Photos this large (a 200 MP one takes 4.9 GB) go alone: they take both slots, one
# such photo at a time, so two of them never wait on each other's second slot.
HUGE_PHOTO_PIXELS = 100_000_000
_HUGE_PHOTOS = threading.Lock()
# Requests in flight at most: at -j 300, a 2-core server's queue outlasted the 30 s
# timeout and 55 of 299 photos failed.
MAX_JOBS = 64
# The largest photo opened: above the 200 MP phones shoot, which Pillow's own
# decompression-bomb guard (179 MP) refuses.  One of 200 MP took 37 s and 4.9 GB.
MAX_PHOTO_PIXELS = 250_000_000


# Options every command takes, which people also put before it.
_COMMAND_OPTIONS = ("--server", "--model", "--version", "--label", "--timeout")


class UsageError(Exception):
    """Bad arguments: reported as one line, exit status 2."""


@dataclass
class Task:
    source: Path | str  # a path, or STDIO
    dest: Path | str  # a path, or STDIO
    fmt: str  # Pillow format name
    named: bool = False  # the output file given with -o: replaced like cp replaces it


@dataclass
class Summary:
    processed: list[Task] = field(default_factory=list)
    skipped: list[Task] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    not_attempted: int = 0  # left when the server or the disk went away
    attempted: int = 0  # photos of the run that were processed or failed
    notes: list[tuple[str, str]] = field(default_factory=list)


def _server_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("model server")
    group.add_argument(
        "--server",
        default=os.environ.get("BGREMOVE_SERVER", defaults.SERVER_ADDRESS),
        help="host:port of the gRPC endpoint (default: $BGREMOVE_SERVER or %(default)s)",
    )
    group.add_argument("--model", default=defaults.MODEL_NAME, help="model name (%(default)s)")
    which = group.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="serve this model version (default: latest)")
    which.add_argument("--label", help="serve the version with this label, e.g. stable")
    group.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per request (%(default)s)"
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bgremove", description=DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server = _server_options()

    remove = commands.add_parser(
        "remove",
        parents=[server],
        help="remove the background of photos, folders or stdin",
        description="Remove the background of photos (files, folders searched recursively, "
        "or - for stdin).",
        epilog=REMOVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    remove.add_argument("inputs", nargs="+", metavar="INPUT", help="photo, folder, or -")
    remove.add_argument("-o", "--output", help="output file, folder, or - for stdout")
    remove.add_argument(
        "-b",
        "--background",
        default="transparent",
        help="transparent (default), black, white, #rrggbb, blur[:RADIUS] "
        "(default radius 2%% of the longest side), or an image file (cropped to cover)",
    )
    remove.add_argument(
        "--mask-only",
        action="store_true",
        help="write the person mask (255 = person) instead of the cut-out",
    )
    remove.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="hard mask: person where the mask >= T (0..1; the model's own cut is 0.5); "
        "default: soft edges",
    )
    remove.add_argument(
        "--feather",
        type=float,
        default=0.0,
        metavar="PX",
        help="blur the mask edge by PX (default: 0, the model's own soft edge)",
    )
    remove.add_argument(
        "--format",
        choices=["png", "jpg", "webp"],
        default="png",
        help="format of generated names and stdout (%(default)s)",
    )
    remove.add_argument(
        "-j", "--jobs", type=int, default=4, help="concurrent requests, 1..64 (%(default)s)"
    )
    remove.add_argument(
        "--no-refine",
        dest="refine",
        action="store_false",
        help="upsample the mask bilinearly instead of along the photo's edges",
    )
    remove.add_argument("--overwrite", action="store_true", help="redo existing outputs")
    remove.set_defaults(run=run_remove)

    status = commands.add_parser(
        "status",
        parents=[server],
        help="print the served model versions and their states",
        description="Print the served model versions and their states.",
        epilog="exit status: 0 a version serves and no newer one failed to load, 1 none "
        "serves or a newer\none failed (a push that did not go live), 2 server unreachable "
        "or model unknown.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.set_defaults(run=run_status)
    _add_rollout(commands)
    return parser


ROLLOUT_EPILOG = """targets: --config-file PATH (a local file, which the server polls)
         --configmap NAMESPACE/NAME [--key models.config] (through the kubernetes client)
With --server the server reloads the config at once (HandleReloadConfigRequest)
and set-canary waits for the new version to load before labelling it.

exit status: 0 done (or nothing to do), 2 bad config, target or server answer.

examples:
  bgremove rollout show --config-file models.config
  bgremove rollout set-canary 4 --stable 3 --config-file models.config --server localhost:8500
  bgremove rollout promote --configmap bgremover/bgremover-models-config
  bgremove rollout rollback --configmap bgremover/bgremover-models-config"""


def _add_rollout(commands: argparse._SubParsersAction) -> None:
    options = argparse.ArgumentParser(add_help=False)
    where = options.add_argument_group("model config")
    target = where.add_mutually_exclusive_group(required=True)
    target.add_argument("--config-file", metavar="PATH", help="a local model config file")
    target.add_argument("--configmap", metavar="NAMESPACE/NAME", help="a Kubernetes ConfigMap")
    where.add_argument("--key", default="models.config", help="ConfigMap key (%(default)s)")
    where.add_argument("--model", default=defaults.MODEL_NAME, help="model name (%(default)s)")
    where.add_argument("--server", help="host:port to reload at once (default: let it poll)")
    where.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for a load (%(default)s)"
    )
    rollout = commands.add_parser(
        "rollout",
        help="move the stable/canary version labels in the model config",
        description="Canary rollouts with TF Serving version labels: clients pick "
        "ModelSpec.version_label stable or canary.",
        epilog=ROLLOUT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = rollout.add_subparsers(dest="action", required=True, metavar="ACTION")
    helps = {
        "show": "print the version policy and labels",
        "promote": "stable -> the canary's version (canary stays equal to it)",
        "rollback": "canary -> back to the stable version",
        "set-canary": "load VERSION beside stable, then label it canary",
    }
    for name, text in helps.items():
        action = actions.add_parser(
            name,
            parents=[options],
            help=text,
            description=text,
            epilog=ROLLOUT_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == "set-canary":
            action.add_argument("version", type=int, metavar="VERSION")
            action.add_argument(
                "--stable",
                type=int,
                metavar="VERSION",
                help="the version serving now, if the config has no stable label yet",
            )
        action.set_defaults(run=run_rollout)


def run_rollout(args: argparse.Namespace) -> int:
    from serving import rollout

    target: rollout.ConfigTarget
    if args.configmap is not None:
        namespace, _, name = args.configmap.partition("/")
        if not namespace or not name or "/" in name:
            raise UsageError(f"--configmap takes NAMESPACE/NAME, got {args.configmap!r}")
        target = rollout.ConfigMapTarget(namespace, name, args.key)
    else:
        target = rollout.FileTarget(args.config_file)
    try:
        rollout.run(
            args.action,
            target,
            args.model,
            version=getattr(args, "version", None),
            stable=getattr(args, "stable", None),
            server=args.server,
            timeout=args.timeout,
        )
    except (rollout.RolloutError, BackgroundRemoverError) as err:  # both: one line
        print(f"bgremove: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    if sys.stderr is None:  # started with 2>&-: print() would send notes into stdout
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115  (open for the whole run)
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].split("=")[0] in _COMMAND_OPTIONS:
        print(
            f"bgremove: error: {argv[0].split('=')[0]} goes after the command, "
            f"e.g. bgremove status {argv[0]} ...",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help or an argparse usage error
        return int(exit_.code or 0)
    # SIGTERM (kill, timeout) stops like Ctrl-C: photos being written finish or
    # vanish, none is left half-written.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        return args.run(args)
    except UsageError as err:
        print(f"bgremove: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as interrupt:
        print("bgremove: interrupted", file=sys.stderr)
        return 128 + getattr(interrupt, "signum", signal.SIGINT)
    finally:
        if in_main_thread:  # main() may be called by a program with its own handler
            signal.signal(signal.SIGTERM, previous)


class _Terminated(KeyboardInterrupt):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, _frame: object) -> None:
    # Once is enough: a second TERM (sent to every process, and passed on by the
    # sandbox wrapper too) must not cut short the photos being finished.
    signal.signal(signum, signal.SIG_IGN)
    raise _Terminated(signum)


def _check_server(address: str) -> None:
    """gRPC takes anything and fails later with advice about the model; catch typos here."""
    if "://" in address and not address.startswith(GRPC_SCHEMES):
        raise UsageError(f"--server {address}: give host:port (gRPC), not a URL")
    if not address.startswith(GRPC_SCHEMES) and not re.fullmatch(r".+:\d+", address):
        raise UsageError(
            f"--server {address!r}: give host:port, e.g. {defaults.SERVER_ADDRESS} "
            "(or set BGREMOVE_SERVER)"
        )


def _remover(args: argparse.Namespace) -> BackgroundRemover:
    from serving.client import BackgroundRemover

    _check_server(args.server)
    if not args.timeout > 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    return BackgroundRemover(
        args.server,
        args.model,
        version=args.version,
        label=args.label,
        timeout=args.timeout,
        refine=getattr(args, "refine", True),
    )


def run_status(args: argparse.Namespace) -> int:
    with _remover(args) as remover:
        try:
            versions = remover.status()
        except BackgroundRemoverError as err:
            print(f"bgremove: error: {err}", file=sys.stderr)
            return EXIT_USAGE
    print(f"model {args.model!r} at {args.server}")
    for v in versions:
        problem = f"  {v.error_code}: {v.error_message}" if v.error_code != "OK" else ""
        print(f"  version {v.version}: {v.state}{problem}")
    serving = [v.version for v in versions if v.state == "AVAILABLE"]
    # A push that did not go live: a failed version newer than what serves.
    failed = [v.version for v in versions if v.error_code != "OK"]
    return EXIT_OK if serving and max(failed, default=0) < max(serving) else EXIT_FAILED


def _format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        folder = f"; to write into a folder, end it with /: {path}/" if not path.suffix else ""
        raise UsageError(
            f"{path}: unknown output extension; use one of {', '.join(FORMATS)}{folder}"
        )
    return fmt


def _find_images(folder: Path, exclude: Path | None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Photos under ``folder``, through linked folders too (each real folder once), and
    what cannot be read, with why: links that lead nowhere (a photo deleted, a drive not
    mounted), whatever their name, and pipes or devices named like photos."""
    from serving import images

    found, broken, visited = [], [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in visited or (exclude is not None and Path(real).is_relative_to(exclude)):
            dirs[:] = []
            continue
        visited.add(real)
        # Hidden files and folders are not photos to cut out: macOS leaves ._IMG_0001.JPG
        # beside each photo on USB drives and shares, and .thumbnails hold copies.
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in (f for f in files if not f.startswith(".")):  # links to nothing too
            path = Path(root, name)
            if path.is_file():
                if path.suffix.lower() in defaults.PHOTO_EXTENSIONS:
                    found.append(path)
            elif path.is_symlink() or path.suffix.lower() in defaults.PHOTO_EXTENSIONS:
                broken.append((path, images.unreadable_reason(path)))
    return sorted(found), sorted(broken)


def plan(args: argparse.Namespace) -> tuple[list[Task], list[tuple[str, str]]]:
    """Maps inputs to outputs; missing inputs become failures, not a stop."""
    from serving import images

    suffix = "." + args.format
    inputs: list[str] = args.inputs
    output: str | None = args.output
    if STDIO in inputs:
        if len(inputs) > 1:
            raise UsageError(
                "- (stdin) must be the only input; its result goes to stdout, or to -o FILE"
            )
        dest = output or STDIO
        fmt = FORMATS[suffix] if dest == STDIO else _format_of(Path(dest))
        return [Task(STDIO, dest if dest == STDIO else Path(dest), fmt, named=True)], []
    if output == STDIO and (len(inputs) > 1 or Path(inputs[0]).is_dir()):
        raise UsageError("-o - (stdout) takes exactly one input photo")

    single = len(inputs) == 1 and not Path(inputs[0]).is_dir()
    out_dir: Path | None = None
    if output is not None and output != STDIO:
        as_dir = Path(output).is_dir() or output.endswith(("/", os.sep))
        several = "several photos" if len(inputs) > 1 else "a folder"
        if not single and Path(output).is_file():
            raise UsageError(f"-o {output}: must be a folder when the input is {several}")
        if not single and not as_dir and Path(output).suffix.lower() in FORMATS:
            raise UsageError(
                f"-o {output}: the input is {several}, so the output is a folder; "
                f"name one without an image extension"
            )
        out_dir = Path(output) if (as_dir or not single) else None

    tasks: list[Task] = []
    failed: list[tuple[str, str]] = []
    for name in inputs:
        source = Path(name)
        if source.is_dir():
            named = source if source.name else source.resolve()  # "." has no name
            if out_dir is None:
                target = named.with_name(named.name + DEFAULT_SUFFIX)
            else:  # several folders into one: each keeps its name, so none overwrites another
                target = out_dir / named.name if len(inputs) > 1 else out_dir
            exclude = target.resolve()
            if source.resolve().is_relative_to(exclude):
                raise UsageError(
                    f"-o {output}: it holds the input folder {name}, whose photos would be "
                    "taken for outputs; write to another folder"
                )
            photos, broken = _find_images(source, exclude)
            for path in photos:
                rel = path.relative_to(source).with_suffix(suffix)
                tasks.append(Task(path, target / rel, FORMATS[suffix]))
            failed.extend((str(path), why) for path, why in broken)
        elif not source.is_file():
            failed.append((name, images.unreadable_reason(source)))
        elif output == STDIO:
            tasks.append(Task(source, STDIO, FORMATS[suffix]))
        elif single and output is not None and out_dir is None:
            tasks.append(Task(source, Path(output), _format_of(Path(output)), named=True))
        elif out_dir is not None:
            tasks.append(Task(source, out_dir / (source.stem + suffix), FORMATS[suffix]))
        else:
            dest = source.with_name(source.stem + DEFAULT_SUFFIX + suffix)
            tasks.append(Task(source, dest, FORMATS[suffix]))
    kept = []
    for task in _deduplicate(_once_each(tasks)):
        if _same_file(task.source, task.dest):
            failed.append(
                (str(task.source), "the output would replace the photo: choose another -o")
            )
        else:
            kept.append(task)
    return kept, failed


def _once_each(tasks: list[Task]) -> list[Task]:
    """A photo named twice (a.jpg ./a.jpg, a folder and a photo in it, or A.jpg and
    a.jpg on a volume that ignores letter case) is done once: one file, one output."""
    seen: set[tuple[int, int] | None] = set()
    once = []
    for task in tasks:
        try:
            stat = os.stat(task.source) if isinstance(task.source, Path) else None
            identity = (stat.st_dev, stat.st_ino) if stat else None
        except OSError:  # gone already: reading it says so
            identity = (-1, id(task))
        if identity not in seen or identity is None:
            once.append(task)
            seen.add(identity)
    return once


def _same_file(source: Path | str, dest: Path | str) -> bool:
    if STDIO in (source, dest):
        return False
    return Path(source).resolve() == Path(dest).resolve()


def _deduplicate(tasks: list[Task]) -> list[Task]:
    """Photos with one output name each get a name of their own, whatever the order:
    their whole file name (photo.jpg.nobg.png, photo.png.nobg.png), then their folders'
    names in front (cam2-IMG_0001.JPG.png).  So adding a photo later never hands its
    neighbour's existing output to it.  Names are compared in any letter case, as
    macOS and Windows file systems do, and photos whose paths differ in case alone get a
    mark of their exact name (A.jpg-1f3a2b.png, a.jpg-9c04de.png)."""
    renamable = [t for t in tasks if isinstance(t.dest, Path) and isinstance(t.source, Path)]
    # What follows the stem in the first choice: ".nobg.png" next to the photo, ".png" in -o.
    endings = {id(t): t.dest.name.removeprefix(t.source.stem) for t in renamable}
    clashing = _clashing(tasks, renamable)
    real = {id(t): t.source.resolve() for t in clashing}  # only those that clash
    # Photos whose paths differ in letter case only (a.jpg, A.jpg): no folder in front
    # tells them apart, so each gets a mark of its exact name, which no later photo moves.
    twins: dict[str, list[Task]] = {}
    for task in clashing:
        twins.setdefault(str(real[id(task)]).casefold(), []).append(task)
    for task in (t for group in twins.values() if len(group) > 1 for t in group):
        mark = hashlib.sha256(str(real[id(task)]).encode()).hexdigest()[:6]
        endings[id(task)] = f"-{mark}{endings[id(task)]}"

    def folders(task: Task) -> list[str]:
        if id(task) not in real:  # a task that clashes only after another's rename
            real[id(task)] = task.source.resolve()
        return [p.name for p in real[id(task)].parents if p.name]

    depth = 0
    while clashing and depth <= max(len(folders(t)) for t in clashing):
        for task in clashing:
            names = [*folders(task)[:depth][::-1], task.source.name]
            task.dest = task.dest.with_name("-".join(names) + endings[id(task)])
        clashing, depth = _clashing(tasks, renamable), depth + 1
    return tasks


def _clashing(tasks: list[Task], renamable: list[Task]) -> list[Task]:
    clashes = Counter(str(t.dest).casefold() for t in tasks)
    return [t for t in renamable if clashes[str(t.dest).casefold()] > 1]


class WriteError(OSError):
    """An output that could not be written, named by its final path."""

    def __str__(self) -> str:  # the message alone, without "[Errno 28]"
        return self.strerror or super().__str__()


def _save(image: Image.Image, task: Task) -> None:
    import io

    options = {"JPEG": {"quality": 95}, "WEBP": {"quality": 90}}.get(task.fmt, {})
    if task.fmt == "WEBP" and image.mode == "L":  # a mask: lossy WebP would blur its levels
        options = {"lossless": True}
    # Pillow's JPEG and WebP writers embed a colour profile only when asked.
    for key in ("icc_profile", "dpi"):
        if image.info.get(key):
            options[key] = image.info[key]
    if task.dest == STDIO:
        buffer = io.BytesIO()
        image.save(buffer, task.fmt, **options)
        try:
            _write_all(sys.stdout.buffer, memoryview(buffer.getvalue()))
        except OSError as err:
            raise WriteError(err.errno, f"cannot write to stdout: {err.strerror or err}") from err
        return
    dest = Path(task.dest)
    partial = dest.with_name(f".{dest.name}.part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        image.save(partial, task.fmt, **options)
        os.replace(partial, dest)
    except (FileExistsError, NotADirectoryError) as err:  # mkdir said "File exists"
        file = next((p for p in dest.parents if p.is_file()), dest.parent)
        raise WriteError(err.errno, f"cannot write {dest}: {file} is a file, not a folder") from err
    except OSError as err:  # the temporary name would only confuse
        raise WriteError(err.errno, f"cannot write {dest}: {err.strerror or err}") from err
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def _write_all(stream: BinaryIO, data: memoryview) -> None:
    """A full disk cuts a write short without an error: the rest of it raises one.
    (Unbuffered, stdout is a raw file: a non-blocking one answers None until it drains.)"""
    while data:
        written = stream.write(data)
        if written is None:
            select.select([], [stream], [])
            continue
        if not written:
            raise OSError(errno.EIO, "the output took no more bytes")
        data = data[written:]
    stream.flush()


def _process(
    task: Task,
    remover: BackgroundRemover,
    background: Background,
    args: argparse.Namespace,
) -> str | None:
    """Writes the task's output; returns a note for the summary, if any."""
    from serving import compositing, images

    source = _read_stdin() if task.source == STDIO else task.source
    pixels, frames = images.header(source)
    with _memory_slots(pixels):
        if args.mask_only:
            mask = remover.mask(source)
            result = compositing.alpha_from_mask(mask, mask.size, args.threshold, args.feather)
        else:
            result = remover.remove(source, background, args.threshold, args.feather)
        _save(result, task)
    return f"the first of its {frames} frames only" if frames > 1 else None


@contextlib.contextmanager
def _memory_slots(pixels: int) -> Iterator[None]:
    """Holds what a photo of this size needs of the big-photo slots while it is cut out."""
    with contextlib.ExitStack() as stack:
        if pixels > HUGE_PHOTO_PIXELS:
            stack.enter_context(_HUGE_PHOTOS)
            stack.enter_context(_BIG_PHOTOS)
        if pixels > BIG_PHOTO_PIXELS:
            stack.enter_context(_BIG_PHOTOS)
        yield


def _check_options(args: argparse.Namespace) -> Background:
    from serving import compositing

    if not 1 <= args.jobs <= MAX_JOBS:
        raise UsageError(
            f"--jobs must be 1..{MAX_JOBS}: more requests only wait in the server's queue, "
            "and the wait counts against --timeout"
        )
    try:
        compositing.check_edge_options(args.threshold, args.feather)
    except ValueError as err:
        raise UsageError(f"--{err}") from None
    try:
        background = compositing.parse_background(args.background)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.mask_only and background.opaque:
        raise UsageError("--mask-only writes the mask alone: leave out -b")
    return background


def _check_terminal(tasks: list[Task]) -> None:
    """Image data neither comes from a terminal (it would wait for typing) nor goes to one."""
    if any(t.source == STDIO for t in tasks) and sys.stdin is not None and sys.stdin.isatty():
        raise UsageError(
            "- reads the photo from stdin, which is a terminal: pipe one in "
            "(bgremove remove - < photo.jpg) or name the file"
        )
    if any(t.dest == STDIO for t in tasks):
        if sys.stdout is None:  # started with >&-
            raise UsageError("no standard output to write the result to (it is closed)")
        if sys.stdout.isatty():
            raise UsageError(
                "the result is image data, not text: redirect stdout (> out.png) or use -o FILE"
            )


def run_remove(args: argparse.Namespace) -> int:
    from serving import images

    images.allow_pixels(MAX_PHOTO_PIXELS)
    background = _check_options(args)
    tasks, failed = plan(args)
    _check_terminal(tasks)
    transparent = not args.mask_only and not background.opaque
    if transparent and any(t.fmt == "JPEG" for t in tasks):
        raise UsageError(
            "JPEG cannot store transparency: add -b white (or another background), "
            "use --mask-only, or write .png/.webp"
        )
    summary = Summary(failed=failed)
    todo = []
    for task in tasks:
        kept = task.dest != STDIO and not task.named and Path(task.dest).exists()
        (summary.skipped if kept and not args.overwrite else todo).append(task)
    if not tasks and not failed:
        print("bgremove: no images found in " + " ".join(args.inputs), file=sys.stderr)
        return EXIT_FAILED

    try:
        with _remover(args) as remover:
            fatal = _run_all(todo, remover, background, args, summary)
    except KeyboardInterrupt:
        summary.not_attempted = len(todo) - summary.attempted
        _print_summary(summary, stdout_used=False)
        raise
    if fatal is not None:
        if summary.processed or summary.failed:  # else the error alone says it all
            summary.not_attempted = len(todo) - summary.attempted
            _print_summary(summary, stdout_used=False)
        if isinstance(fatal, WriteError):  # listed with the photo it failed on
            return EXIT_FAILED
        print(f"bgremove: error: {fatal}", file=sys.stderr)
        return EXIT_USAGE
    _print_summary(summary, stdout_used=any(t.dest == STDIO for t in tasks))
    return EXIT_FAILED if summary.failed else EXIT_OK


def _run_all(
    todo: list[Task],
    remover: BackgroundRemover,
    background: Background,
    args: argparse.Namespace,
    summary: Summary,
) -> Exception | None:
    """Runs the tasks on a thread pool; returns the error that made further work pointless."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm import tqdm

    from serving.client import ModelNotFound, RequestFailed, ServerUnavailable

    fatal: Exception | None = None
    # A hung server costs the full timeout per photo: two rounds of --jobs of them in
    # a row (at least three) end the batch.
    stalled, stall_limit = 0, max(3, 2 * args.jobs)
    with (
        ThreadPoolExecutor(max_workers=args.jobs) as pool,
        # A bar only on a terminal: in logs its carriage returns are noise.
        tqdm(
            total=len(todo),
            unit="photo",
            disable=len(todo) < 2 or not sys.stderr.isatty(),
            file=sys.stderr,
        ) as bar,
    ):
        futures = {pool.submit(_process, t, remover, background, args): t for t in todo}
        recorded: set[Future] = set()
        try:
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                bar.update()
                recorded.add(future)
                error = _record(
                    future, futures[future], summary, (ServerUnavailable, ModelNotFound)
                )
                stalled = stalled + 1 if _timed_out(future) else 0
                if error is None and stalled >= stall_limit:
                    error = RequestFailed(
                        f"the model server at {args.server} answered none of the last "
                        f"{stalled} photos within {args.timeout:g}s: it is hung or "
                        "overloaded; stopped (raise --timeout for a slow server)"
                    )
                if error is not None:
                    fatal = fatal or error
                    for pending in futures:
                        pending.cancel()
        except KeyboardInterrupt:
            # Ctrl-C: drop the queued photos; those being written finish and are counted.
            pool.shutdown(wait=False, cancel_futures=True)
            for future, task in futures.items():
                if future not in recorded and not future.cancelled():
                    _record(future, task, summary, (ServerUnavailable, ModelNotFound))
            raise
    return fatal


def _timed_out(future: Future) -> bool:
    import grpc

    from serving.client import RequestFailed

    error = future.exception()
    return isinstance(error, RequestFailed) and error.code == grpc.StatusCode.DEADLINE_EXCEEDED


def _record(
    future: Future, task: Task, summary: Summary, server_errors: tuple[type[Exception], ...]
) -> Exception | None:
    """Counts a finished photo; returns the error if every later photo would meet it too."""
    try:
        note = future.result()
    except server_errors as err:  # no server or no model: not this photo's fault
        return err
    except Exception as err:  # one bad photo never stops the batch
        summary.attempted += 1
        summary.failed.append((str(task.source), _one_line(err)))
        if isinstance(err, WriteError) and err.errno in _DISK_ERRORS:
            return err  # but a full disk fails every later one too
        return None
    summary.attempted += 1
    summary.processed.append(task)
    if note:
        summary.notes.append((str(task.source), note))
    return None


def _one_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _read_stdin() -> bytes:
    if sys.stdin is None:  # started with stdin closed (<&-)
        raise OSError("no standard input to read the photo from (it is closed)")
    return sys.stdin.buffer.read()


def _shown(name: object) -> str:
    """A file name as one line of text: a newline or a terminal escape in a name must
    neither split the list nor reach the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(name))


def _print_summary(summary: Summary, stdout_used: bool) -> None:
    if stdout_used and not summary.failed:  # the photo went to stdout: only its notes
        for _, note in summary.notes:
            print(f"bgremove: note: {note}", file=sys.stderr)
        return
    parts = [f"{len(summary.processed)} processed"]
    if summary.skipped:
        parts.append(f"{len(summary.skipped)} skipped (output exists; --overwrite to redo)")
    parts.append(f"{len(summary.failed)} failed")
    if summary.not_attempted:
        parts.append(f"{summary.not_attempted} not attempted")
    alone = not (summary.skipped or summary.failed or summary.not_attempted)
    if len(summary.processed) == 1 and alone:
        task = summary.processed[0]
        note = f" ({summary.notes[0][1]})" if summary.notes else ""
        print(f"{_shown(task.source)} -> {_shown(task.dest)}{note}", file=sys.stderr)
        return
    print("bgremove: " + ", ".join(parts) + (":" if summary.failed else ""), file=sys.stderr)
    for name, reason in sorted(summary.failed):
        print(f"  {_shown(name)}: {reason}", file=sys.stderr)
    for name, note in sorted(summary.notes):
        print(f"  note: {_shown(name)}: {note}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
