#!/usr/bin/env bash
# Create (or refresh) .venv with the client, the services and the dev tools at the pinned versions,
# and install buf from the npm registry. Safe to run again; it does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ constraints.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ] \
   || [ clients/python/pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e clients/python -e ".[dev]"
  touch "$stamp"
fi
if [ ! -x node_modules/.bin/buf ]; then
  npm ci --silent --no-audit --no-fund
fi
