#!/usr/bin/env bash
# Build the wheelhouse the Ansible roles install floorgate from: the floorgate wheel plus a wheel of every
# dependency, so a node needs no index and no internet (pip install --no-index --find-links). Run it on the
# controller (with internet or a PyPI mirror); the roles copy the directory to each host.
#
#   scripts/build-wheelhouse.sh [OUT_DIR]                  wheels for this machine's Python and CPU (default OUT_DIR:
#                                                          ansible/wheelhouse)
#   scripts/build-wheelhouse.sh --platform manylinux2014_aarch64 [--python-version 3.11] [OUT_DIR]
#                                                          binary wheels for another CPU, e.g. a Raspberry Pi 4/5 on
#                                                          64-bit Raspberry Pi OS (bookworm: Python 3.11)
#
# The wheels must match the hosts' Python (Debian 12 / Raspberry Pi OS bookworm: 3.11) and CPU. PYTHON selects the
# interpreter that builds (default: .venv/bin/python if present, else python3). OUT_DIR is replaced as a whole, so
# no stale wheel lingers; the roles reinstall on a host only when the set of wheels changed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
platform=""
pyver=""
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --platform) platform=$2; shift 2 ;;
        --python-version) pyver=$2; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "build-wheelhouse: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) out=$1; shift ;;
    esac
done
out=${out:-$here/ansible/wheelhouse}
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$here/.venv/bin/python" ]; then PYTHON=$here/.venv/bin/python; else PYTHON=python3; fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/wheelhouse.XXXXXX")
trap 'rm -rf "$work"' EXIT
tmp=$work/wheels
src=$work/src
mkdir -p "$tmp" "$src"
# build from a copy: setuptools writes build/ and *.egg-info into the source tree otherwise
(cd "$here" && tar -cf - --exclude=__pycache__ --exclude='*.pyc' pyproject.toml README.md ./*.py \
    protocols sync edge central tools firmware-config) | tar -C "$src" -xf -
if [ -z "$platform" ]; then
    "$PYTHON" -m pip wheel --quiet --wheel-dir "$tmp" "$src"
else
    pyver=${pyver:-$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}
    "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$tmp" "$src"
    # the dependencies as published binary wheels for that platform (pure-Python ones are py3-none-any anyway)
    "$PYTHON" -m pip download --quiet --dest "$tmp" --find-links "$tmp" --only-binary=:all: \
        --platform "$platform" --python-version "$pyver" --implementation cp floorgate
fi
count=$(find "$tmp" -maxdepth 1 -name '*.whl' | wc -l)
[ "$count" -gt 1 ] || { echo "build-wheelhouse: no wheels were built in $tmp" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$(dirname "$out")"
cp -r "$tmp" "$out"
chmod 0755 "$out"
target=${platform:+Python $pyver on $platform}
echo "wheelhouse $out: $count wheels ($(du -sh "$out" | cut -f1)) for ${target:-$("$PYTHON" -c 'import platform, sys; print(f"Python {sys.version_info[0]}.{sys.version_info[1]} on {platform.machine()}")')}"
