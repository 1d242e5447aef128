#!/usr/bin/env bash
# Set up, then check everything: proto lint (buf), generated-code drift, and the whole test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"` for the fast tests alone.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

echo "== buf lint"
(cd proto && ../node_modules/.bin/buf lint)
echo "== ruff"
.venv/bin/ruff check .
echo "== generated code"
.venv/bin/python scripts/gen_protos.py --check
.venv/bin/python scripts/gen_openapi.py --check
.venv/bin/python scripts/vendor_web.py --check
echo "== tests"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ $status -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit $status
