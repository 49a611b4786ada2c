"""``bgremove``: remove the background behind people in photos via a model server.

Only the standard library is imported at start-up so that ``--help`` is instant;
numpy, Pillow and gRPC are imported by the subcommands that need them.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from serving import defaults
from serving.errors import BackgroundRemoverError, UsageError
from serving.output_plan import DEFAULT_SUFFIX, STDIO, Task

if TYPE_CHECKING:
    from serving.client import BackgroundRemover
    from serving.compositing import Background

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
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


# Requests in flight at most: at -j 300, a 2-core server's queue outlasted the 30 s
# timeout and 55 of 299 photos failed.
MAX_JOBS = 64


# Options every command takes, which people also put before it.
_COMMAND_OPTIONS = ("--server", "--model", "--version", "--label", "--timeout")


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
        "default: a soft edge a pixel or two wide",
    )
    remove.add_argument(
        "--feather",
        type=float,
        default=0.0,
        metavar="PX",
        help="blur the mask edge by PX (default: 0)",
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


def _dashed_names(argv: list[str]) -> list[str]:
    """Existing files named like options before ``--``: argparse reads ``-old.jpg`` as
    ``-o ld.jpg`` and ``-x.jpg`` as an unknown option, never as a photo."""
    before = argv[: argv.index("--")] if "--" in argv else argv
    return [arg for arg in before if arg.startswith("-") and arg != "-" and os.path.lexists(arg)]


def _dashed_hint(name: str, argv: list[str]) -> str:
    command = next((arg for arg in argv if not arg.startswith("-")), "remove")
    example = f"bgremove {command} -- {name}"
    return f"{name} is a file; put -- before names that start with -, e.g. {example}"


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
    dashed = _dashed_names(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help or an argparse usage error
        if exit_.code and dashed:
            print(f"bgremove: hint: {_dashed_hint(dashed[0], argv)}", file=sys.stderr)
        return int(exit_.code or 0)
    if dashed:  # parsed, but as options: -old.jpg would have written to ld.jpg
        print(f"bgremove: error: {_dashed_hint(dashed[0], argv)}", file=sys.stderr)
        return EXIT_USAGE
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
    from serving.output_plan import plan

    images.allow_pixels(images.MAX_OPENED_PIXELS)
    background = _check_options(args)
    tasks, failed = plan(args.inputs, args.output, args.format)
    _check_terminal(tasks)
    transparent = not args.mask_only and not background.opaque
    if transparent and any(t.fmt == "JPEG" for t in tasks):
        raise UsageError(
            "JPEG cannot store transparency: add -b white (or another background), "
            "use --mask-only, or write .png/.webp"
        )
    if not tasks and not failed:
        print("bgremove: no images found in " + " ".join(args.inputs), file=sys.stderr)
        return EXIT_FAILED
    # gRPC, tqdm and the client only now: usage errors are said without loading them.
    from serving.output_writer import WriteError
    from serving.remove_batch import Summary, print_summary, run_all

    summary = Summary(failed=failed)
    todo = []
    for task in tasks:
        kept = task.dest != STDIO and not task.named and Path(task.dest).exists()
        (summary.skipped if kept and not args.overwrite else todo).append(task)

    try:
        with _remover(args) as remover:
            fatal = run_all(todo, remover, background, args, summary)
    except KeyboardInterrupt:
        summary.not_attempted = len(todo) - summary.attempted
        print_summary(summary, stdout_used=False)
        raise
    if fatal is not None:
        if summary.processed or summary.failed:  # else the error alone says it all
            summary.not_attempted = len(todo) - summary.attempted
            print_summary(summary, stdout_used=False)
        if isinstance(fatal, WriteError):  # listed with the photo it failed on
            return EXIT_FAILED
        print(f"bgremove: error: {fatal}", file=sys.stderr)
        return EXIT_USAGE
    print_summary(summary, stdout_used=any(t.dest == STDIO for t in tasks))
    return EXIT_FAILED if summary.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
