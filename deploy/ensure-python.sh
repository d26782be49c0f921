#!/bin/sh
# Make sure PYTHON (default python3) is 3.11+ and can create virtual environments;
# on Debian / Raspberry Pi OS install python3-venv when it is missing.
set -e
PYTHON=${1:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Humus needs Python 3.11 or newer; '$PYTHON' is $("$PYTHON" --version 2>&1 || echo missing)." >&2
    exit 1
fi
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    echo "Installing python3-venv with apt-get..."
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
fi
