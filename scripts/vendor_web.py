"""Copy the web console's and the API page's libraries from node_modules into the package.

The HTTP front door serves them as static files (services/suite/web/vendor/): no build step and no
network at run time, at the versions package-lock.json pins. `--check` fails when the copies differ
from node_modules (CI runs it after `npm ci`).

    python scripts/vendor_web.py           # copy
    python scripts/vendor_web.py --check   # fail if they have drifted
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "services" / "suite" / "web" / "vendor"
FILES = {  # vendored name -> its source under node_modules
    "swagger-ui-bundle.js": "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui.css": "swagger-ui-dist/swagger-ui.css",
    "swagger-ui.LICENSE": "swagger-ui-dist/LICENSE",
    "alpine.min.js": "alpinejs/dist/cdn.min.js",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the copies differ from node_modules")
    check = parser.parse_args().check
    stale = []
    for name, source in FILES.items():
        src, dst = ROOT / "node_modules" / source, VENDOR / name
        if check:
            if not dst.exists() or not filecmp.cmp(src, dst, shallow=False):
                stale.append(name)
        else:
            VENDOR.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    if stale:
        print("services/suite/web/vendor differs from node_modules; run scripts/vendor_web.py:", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
