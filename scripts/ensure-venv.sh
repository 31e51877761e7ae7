#!/usr/bin/env bash
# Create the project's virtual environment (.venv) with floorgate installed into it.
# On a fresh Debian machine `python3 -m venv` needs the python3-venv package: as root it is installed with apt-get,
# otherwise the line to run is printed. Python 3.11 or newer is required.
set -euo pipefail
python=${PYTHON:-python3}
venv=${1:-.venv}

if ! command -v "$python" >/dev/null 2>&1; then
    echo "$python not found: install Python 3.11+ (Debian: apt-get install python3 python3-venv)" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "floorgate needs Python 3.11 or newer; $python is $("$python" -V 2>&1)" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv" 2>/dev/null; then
        rm -rf "$venv"
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "Installing python3-venv (needed to create $venv) ..."
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
            "$python" -m venv "$venv"
        else
            echo "Cannot create $venv: install the venv module (Debian: sudo apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
"$venv/bin/python" -m pip install --quiet --editable '.[test]'
