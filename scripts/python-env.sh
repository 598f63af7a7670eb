#!/usr/bin/env bash
# Prints the path of a Python with confluent-kafka, for the interop test: a virtualenv under
# the cache, made once from PyPI and reused.
set -euo pipefail
VENV=${INTEROP_VENV:-$HOME/.cache/competing-transformers/venv-interop}
VERSION=2.16.1
if ! "$VENV/bin/python" -c "import confluent_kafka" >/dev/null 2>&1; then
  command -v python3 >/dev/null || { echo "python-env: python3 is missing; install it (apt-get install python3 python3-venv)" >&2; exit 1; }
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet "confluent-kafka==$VERSION" >&2 \
    || { echo "python-env: pip could not install confluent-kafka $VERSION into $VENV" >&2; exit 1; }
fi
echo "$VENV/bin/python"
