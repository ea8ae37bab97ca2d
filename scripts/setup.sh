#!/usr/bin/env bash
# Make the project's virtual environments. Idempotent; safe to run again.
#   .venv          python3 + PySide6 (Nuke 16's binding) + everything for tests
#   .venv-pyside2  Debian's Python 3.11 + Debian's PySide2 5.15 (Nuke 14/15's binding)
# Pass --no-pyside2 to skip the second one (it needs apt and root).
set -euo pipefail
cd "$(dirname "$0")/.."
want_pyside2=1
[ "${1:-}" = "--no-pyside2" ] && want_pyside2=0

PIP_FLAGS=(--disable-pip-version-check -q)
common=(requests websocket-client aiohttp pytest pytest-timeout hypothesis ruff)

stamp_ok() { [ -f "$1/.stamp" ] && [ "$(cat "$1/.stamp")" = "$(sha1sum scripts/setup.sh | cut -c1-40)" ]; }
stamp() { sha1sum scripts/setup.sh | cut -c1-40 > "$1/.stamp"; }

if ! stamp_ok .venv; then
  echo "setup: creating .venv (PySide6)" >&2
  python3 -m venv .venv
  # Nuke 16 ships PySide6 6.5.3: test what artists run (6.12.0 also leaks refs to None/True)
  .venv/bin/pip install "${PIP_FLAGS[@]}" "${common[@]}" "PySide6-Essentials==6.5.3" "pytest-qt"
  .venv/bin/pip install "${PIP_FLAGS[@]}" --no-deps -e .
  stamp .venv
fi

if [ "$want_pyside2" = 1 ] && ! stamp_ok .venv-pyside2; then
  echo "setup: creating .venv-pyside2 (Debian PySide2 5.15)" >&2
  if ! /usr/bin/python3 -c "import PySide2.QtWidgets, PySide2.QtTest, venv" 2>/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv \
      python3-pyside2.qtcore python3-pyside2.qtgui python3-pyside2.qtwidgets python3-pyside2.qttest >/dev/null
  fi
  /usr/bin/python3 -m venv --system-site-packages .venv-pyside2
  # pytest-qt 4.5 dropped PySide2; 4.4.0 is the last that supports it.
  .venv-pyside2/bin/pip install "${PIP_FLAGS[@]}" "${common[@]}" "pytest-qt==4.4.0"
  .venv-pyside2/bin/pip install "${PIP_FLAGS[@]}" --no-deps -e .
  stamp .venv-pyside2
fi
