#!/usr/bin/env bash
# Installs checkov, the scanner tests/unit/test_checkov.py runs, into a virtual environment of its
# own, cached by version outside the repository: ${LTJ_CACHE:-~/.cache/ltj}/checkov-<version>/.
# Its own environment because checkov pins its many dependencies tightly: they must not decide the
# project's. Needs the project venv's uv (make venv). Prints the checkov executable on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${LTJ_CACHE:-$HOME/.cache/ltj}
dest="$cache/checkov-$CHECKOV_VERSION"
uv=${UV:-$here/../.venv/bin/uv}
mkdir -p "$cache"
# One installer at a time (make and a test run may both ask); the marker is written last, so an
# interrupted install is redone, never used.
exec 9>"$cache/checkov.lock"
flock 9
if [ ! -f "$dest/.installed" ]; then
  printf '[install-checkov] checkov %s into %s\n' "$CHECKOV_VERSION" "$dest" >&2
  rm -rf "$dest"
  "$uv" venv -q --python "$(command -v python3)" "$dest"
  "$uv" pip install -q --python "$dest/bin/python" --exclude-newer "$CHECKOV_RESOLVED_AT" "checkov==$CHECKOV_VERSION"
  touch "$dest/.installed"
fi
echo "$dest/bin/checkov"
