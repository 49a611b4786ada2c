#!/usr/bin/env bash
# Builds (once) and enters the project's Python environment.
#
#   scripts/env.sh setup          create the environment if it is missing or stale
#   scripts/env.sh run CMD ARG... run CMD inside it (creating it first)
#   scripts/env.sh info           print where it lives and how it is entered
#
# TFX 1.21's ml-metadata and TFDV wheels need glibc >= 2.38.  On such a host a
# plain venv is used.  On an older host (Debian 12) a Debian 13 root filesystem
# is built with debootstrap and entered with bubblewrap; the repository, the
# sibling ../shared folder and the cache are bound at their own paths so that
# every path means the same inside and out.
#
# Everything lives under $BGR_CACHE (default ~/.cache/background-remover),
# keyed by the lock file's hash.  A directory is only trusted once its
# ".complete" marker exists, so an interrupted build is rebuilt, never reused.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCK="$REPO/requirements.lock"
CACHE="${BGR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/background-remover}"
MIN_GLIBC="2.38"
UV_VERSION="0.13.8"
ROOTFS_PACKAGES="python3,python3-venv,python3-pip,python3-dev,g++,ca-certificates"

log() { printf '[env] %s\n' "$*" >&2; }
die() { printf '[env] error: %s\n' "$*" >&2; exit 1; }

lock_key() {
  # The environment depends on the lock and on how this script builds it.
  cat "$LOCK" "$REPO/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16
}

version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

host_glibc() { getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}'; }

host_python_ok() {
  command -v python3 >/dev/null || return 1
  python3 -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 13)))'
}

choose_mode() {
  if [ -n "${BGR_ENV_MODE:-}" ]; then echo "$BGR_ENV_MODE"; return; fi
  local g; g="$(host_glibc)"
  if [ -n "$g" ] && version_ge "$g" "$MIN_GLIBC" && host_python_ok; then
    echo venv
  else
    echo sandbox
  fi
}

MODE="$(choose_mode)"
KEY="$(lock_key)"
ROOTFS="$CACHE/rootfs-trixie"
VENV="$CACHE/venv-$MODE-$KEY"

debian_mirror() {
  local f=/etc/apt/sources.list.d/debian.sources uri=""
  if [ -r "$f" ]; then uri="$(awk '/^URIs:/{print $2; exit}' "$f")"; fi
  if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
    uri="$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list)"
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

need_tools() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v bwrap >/dev/null || missing+=(bubblewrap)
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${missing[*]} (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    die "this host has glibc $(host_glibc) (TFX 1.21 needs >= $MIN_GLIBC).
  Either run on a host with glibc >= $MIN_GLIBC and Python 3.10-3.13 (a plain venv is used),
  or install the Debian packages: ${missing[*]} (as root: apt-get install ${missing[*]})."
  fi
}

# An interrupted debootstrap leaves /proc mounted inside its target: unmount
# before deleting, and never cross into another file system.
remove_tree() {
  local d="$1"
  [ -e "$d" ] || return 0
  awk -v d="$d" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$d"
}

build_rootfs() {
  [ -f "$ROOTFS/.complete" ] && return
  need_tools
  [ "$(id -u)" = 0 ] || die "building the Debian 13 root filesystem needs root (debootstrap); run 'sudo make setup' once"
  remove_tree "$ROOTFS.partial"
  remove_tree "$ROOTFS"
  mkdir -p "$CACHE"
  local mirror; mirror="$(debian_mirror)"
  log "building a Debian 13 root filesystem from $mirror (about a minute)"
  debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" trixie "$ROOTFS.partial" "$mirror" \
    >"$CACHE/debootstrap.log" 2>&1 || die "debootstrap failed; see $CACHE/debootstrap.log"
  mv "$ROOTFS.partial" "$ROOTFS"
  touch "$ROOTFS/.complete"
}

# Files the sandbox takes from the host at each entry (network and certificates).
sync_host_files() {
  cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf" 2>/dev/null || true
  if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
    cp -L /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
  fi
}

sandbox_exec() {
  local shared; shared="$(cd "$REPO/.." && pwd)/shared"
  # The user's files (make remove ARGS=~/photo.jpg) and the working directory,
  # then the repository and cache on top.
  local binds=() entry
  # Every top-level folder of the host but the system's (/work, /mnt, /media, /srv,
  # /home, ...) at its own path, so that a photo or data folder anywhere means the
  # same inside and out; the system's folders come from the Debian 13 root filesystem.
  for entry in /*; do
    [ -d "$entry" ] && [ ! -L "$entry" ] || continue
    case "${entry#/}" in
      bin | boot | dev | etc | lib | lib32 | lib64 | libx32 | lost+found | proc | run | sbin | sys | tmp | usr | var) continue ;;
    esac
    binds+=(--bind "$entry" "$entry")
  done
  local path
  for path in ${HOME:+"$HOME"} "$PWD" "$REPO" "$CACHE" "$shared"; do
    [ -d "$path" ] || continue
    path="$(realpath "$path")"  # bwrap cannot bind onto a symlink (a linked ../shared)
    binds+=(--bind "$path" "$path")
  done
  local tmp="${TMPDIR:-/tmp}"
  run_forwarding_signals bwrap --die-with-parent --bind "$ROOTFS" / --proc /proc --dev /dev \
    --bind "$tmp" "$tmp" "${binds[@]}" --chdir "$(pwd -P)" \
    --unsetenv PIP_FIND_LINKS --unsetenv PIP_CONSTRAINT --setenv PYTHONPATH "$REPO" \
    --setenv PATH "$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --setenv VIRTUAL_ENV "$VENV" --setenv BGR_IN_ENV 1 \
    env --default-signal=INT,QUIT,TERM,HUP "$@"
}

# Runs bwrap (CMD) and exits with its status.  bwrap passes no signal on, and when it
# dies it kills the command at once (--die-with-parent): so bwrap ignores the stop
# signals, and the command, which gets them back (env --default-signal), stops as it
# chooses: `make serve` drains, `bgremove` finishes its photo.  Ctrl-C, or a TERM for
# the whole process group (systemd, pkill -f), reaches the command directly; a TERM or
# HUP for this script alone (kill, timeout) is passed on to it.
run_forwarding_signals() {
  (
    trap '' INT QUIT TERM HUP
    exec "$@"
  ) <&0 &
  local pid=$! status
  forward() {
    local children
    # || true: bwrap may be gone already, and errexit would end this script in the trap
    children="$(cat /proc/"$pid"/task/*/children 2>/dev/null || true)"
    # shellcheck disable=SC2086  # one pid a word
    kill -"$1" ${children:-$pid} 2>/dev/null || true
  }
  trap 'forward TERM' TERM
  trap 'forward HUP' HUP
  trap ':' INT
  while :; do
    status=0
    wait "$pid" || status=$?
    kill -0 "$pid" 2>/dev/null || break  # a trapped signal ended the wait, not bwrap
  done
  # bwrap may have ended while a trap ran (the wait then says 128+n): bash keeps its
  # own status for another wait.
  local last=0
  wait "$pid" 2>/dev/null || last=$?
  [ "$last" = 127 ] || status=$last
  exit "$status"
}

# Run a command where the venv's Python works: the sandbox or the host.
in_base() {
  if [ "$MODE" = sandbox ]; then (sandbox_exec "$@"); else "$@"; fi
}

build_venv() {
  [ -f "$VENV/.complete" ] && return
  [ -f "$LOCK" ] || die "no lock file at $LOCK"
  remove_tree "$VENV"
  local py=python3
  log "creating the $MODE environment at $VENV (a few minutes)"
  in_base "$py" -m venv "$VENV"
  in_base env -u PIP_FIND_LINKS "$VENV/bin/python" -m pip install -q "uv==$UV_VERSION"
  in_base "$VENV/bin/uv" pip sync --quiet --python "$VENV/bin/python" "$LOCK"
  in_base "$VENV/bin/uv" pip install --quiet --no-deps --python "$VENV/bin/python" -e "$REPO"
  in_base "$VENV/bin/python" -c 'import tfx.v1, tensorflow, ml_metadata, tensorflow_data_validation' \
    || die "the environment was built but TFX does not import; see the output above"
  touch "$VENV/.complete"
  # Environments built from other lock files are stale once no process runs
  # in them and nothing has entered them for an hour.
  local old
  for old in "$CACHE"/venv-"$MODE"-*; do
    [ "$old" != "$VENV" ] && [ -d "$old" ] || continue
    [ -n "$(find "$old" -maxdepth 0 -mmin +60)" ] || continue
    grep -qsaF "VIRTUAL_ENV=$old" /proc/[0-9]*/environ && continue
    rm -rf "$old"
  done
  log "environment ready"
}

setup() {
  mkdir -p "$CACHE"
  # One builder at a time: parallel `make` targets or test runs wait here.
  exec 9>"$CACHE/.setup.lock"
  flock 9
  if [ "$MODE" = sandbox ]; then build_rootfs; sync_host_files; fi
  build_venv
  exec 9>&-
}

case "${1:-setup}" in
  setup) setup ;;
  run)
    shift
    [ $# -gt 0 ] || die "usage: scripts/env.sh run CMD [ARG...]"
    if [ "${BGR_IN_ENV:-}" = 1 ]; then exec "$@"; fi
    setup
    touch "$VENV"  # marks it as in use for the clean-up above
    # One cached environment serves every clone with the same lock, but its
    # editable install points at the clone that built it: PYTHONPATH puts this
    # clone's code first (sandbox_exec sets it too).
    if [ "$MODE" = sandbox ]; then sandbox_exec "$@"; fi
    export PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV" BGR_IN_ENV=1 PYTHONPATH="$REPO"
    exec "$@"
    ;;
  info) printf 'mode=%s\nvenv=%s\nrootfs=%s\nkey=%s\n' "$MODE" "$VENV" "$ROOTFS" "$KEY" ;;
  *) die "unknown command '$1' (setup, run, info)" ;;
esac
