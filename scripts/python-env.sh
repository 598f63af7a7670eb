#!/usr/bin/env bash
# Prints the path of a Python with confluent-kafka and cryptography (Ed25519, for signed
# records), for the interop test: a virtualenv under the cache, made once from PyPI and reused.
set -euo pipefail
VENV=${INTEROP_VENV:-$HOME/.cache/competing-transformers/venv-interop}
VERSION=2.16.1
CRYPTOGRAPHY_VERSION=44.0.0
if ! "$VENV/bin/python" -c "import confluent_kafka, cryptography" >/dev/null 2>&1; then
  command -v python3 >/dev/null || { echo "python-env: python3 is missing; install it (apt-get install python3 python3-venv)" >&2; exit 1; }
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet "confluent-kafka==$VERSION" "cryptography==$CRYPTOGRAPHY_VERSION" >&2 \
    || { echo "python-env: pip could not install confluent-kafka $VERSION and cryptography $CRYPTOGRAPHY_VERSION into $VENV" >&2; exit 1; }
fi
echo "$VENV/bin/python"
