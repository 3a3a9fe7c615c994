#!/usr/bin/env bash
# Idempotent setup of a fresh machine: ffmpeg from apt, the project and its pinned
# dependencies into .venv.  A warm machine (same pyproject.toml) does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
  echo "setup: installing ffmpeg (apt)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg >/dev/null
fi

# Chromium renders the HTML QC report in the tests (headless).
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium (apt), for the QC report tests"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

PY=${PYTHON:-python3}
# webrtcvad (resemblyzer's dependency) ships no wheel: it compiles, needing a C compiler and Python headers.
pyinc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
if ! command -v gcc >/dev/null 2>&1 || [ ! -f "$pyinc/Python.h" ]; then
  echo "setup: installing a C compiler and Python headers (apt), for webrtcvad"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq build-essential python3-dev >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi

stamp=".venv/.dub-film-installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing dub-film and its dependencies into .venv (first time: several minutes, several GB)"
  .venv/bin/python -m pip install -q --upgrade pip 'setuptools<81' wheel
  .venv/bin/python -m pip install -q -e '.[test]'
  rm -f .venv/.dub-film-installed-*
  touch "$stamp"
fi
