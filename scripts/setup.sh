#!/usr/bin/env bash
# Create (or refresh) .venv with the client, the services and the dev tools at the pinned versions,
# and install buf and the Node test client's packages from the npm registry. Safe to run again; it does only what is missing.
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
# buf, the web console's vendored packages and the Node client test's gRPC packages (tests/node);
# again whenever the lock file changed.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --silent --no-audit --no-fund
fi

# The web console's browser test (tests/rest/test_console.py) drives Debian's chromium through chromium-driver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq >/dev/null && apt-get install -y -qq chromium chromium-driver >/dev/null; } || true
  fi
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "setup: chromium or chromium-driver is missing, so the web console's browser test is skipped" \
         "(apt-get install chromium chromium-driver)." >&2
  fi
fi

# The sandbox for uploaded programs (services/kit/sandbox.py) needs bubblewrap and libseccomp.
sandbox_ready() {
  command -v bwrap >/dev/null && .venv/bin/python -c "import ctypes; ctypes.CDLL('libseccomp.so.2')" 2>/dev/null
}
if ! sandbox_ready; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq bubblewrap libseccomp2 >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq bubblewrap libseccomp2 >/dev/null; } || true
  fi
  if ! sandbox_ready; then
    echo "setup: bubblewrap or libseccomp2 is missing, so uploaded programs will not run until they are" \
         "installed (apt-get install bubblewrap libseccomp2); everything else works." >&2
  fi
fi
