#!/usr/bin/env bash
# The quick start, end to end, on the embedded default: set up, start the whole suite on this
# machine (SQLite under $DATA_DIR), run examples/quickstart.py (gRPC, the client) and
# examples/quickstart_rest.py (HTTP/JSON) against it, stop the suite cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

DATA_DIR=${DATA_DIR:-.qruntime}
PORT=${QRUNTIME_PORT:-8443}
.venv/bin/qruntime up --data-dir "$DATA_DIR" --port "$PORT" > "$DATA_DIR.log" 2>&1 &
suite=$!
trap 'kill -TERM $suite 2>/dev/null; wait $suite 2>/dev/null || true' EXIT

# Wait until the suite reports SERVING on the standard health check (and bootstrap.json exists).
for _ in $(seq 1 120); do
  if [ -f "$DATA_DIR/bootstrap.json" ] && .venv/bin/python -m qruntime_suite.probe "127.0.0.1:$PORT"; then
    break
  fi
  kill -0 $suite 2>/dev/null || { cat "$DATA_DIR.log"; echo "the suite did not start" >&2; exit 1; }
  sleep 0.5
done
echo "suite is up (log: $DATA_DIR.log)"
.venv/bin/python examples/quickstart.py --bootstrap "$DATA_DIR/bootstrap.json"
.venv/bin/python examples/quickstart_rest.py --bootstrap "$DATA_DIR/bootstrap.json"
kill -TERM $suite && wait $suite && echo "suite stopped cleanly"
trap - EXIT
