"""Copy the web console's and the API page's libraries from node_modules into the package, and write
the console's example jobs.

The HTTP front door serves them as static files (services/suite/web/vendor/): no build step and no
network at run time, at the versions package-lock.json pins. The examples (web/examples.json) hold
the quick start's Bell circuit encoded as the client encodes it, so a browser can run it. `--check`
fails when the files differ from a fresh copy (CI runs it after `npm ci`).

    python scripts/vendor_web.py           # copy
    python scripts/vendor_web.py --check   # fail if they have drifted
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "services" / "suite" / "web"
VENDOR = WEB / "vendor"
FILES = {  # vendored name -> its source under node_modules
    "swagger-ui-bundle.js": "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui.css": "swagger-ui-dist/swagger-ui.css",
    "swagger-ui.LICENSE": "swagger-ui-dist/LICENSE",
    "alpine.min.js": "alpinejs/dist/cdn.min.js",
}


def examples() -> str:
    from qruntime import ReferenceCircuits
    from qruntime.encoding import dumps

    bell = json.loads(dumps({"circuits": ReferenceCircuits.bell()}))
    return json.dumps({
        "bell": {"title": "Bell circuit, sampler", "program_id": "sampler", "params": bell},
        "hello": {"title": "hello-world", "program_id": "hello-world", "params": {"iterations": 1}},
        "long": {"title": "hello-world, 2,000 iterations (long)", "program_id": "hello-world",
                 "params": {"iterations": 2000}},
    }, indent=1) + "\n"


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
    if check:
        if not (WEB / "examples.json").exists() or (WEB / "examples.json").read_text() != examples():
            stale.append("examples.json")
    else:
        (WEB / "examples.json").write_text(examples())
    if stale:
        print("services/suite/web differs from node_modules or the examples; run scripts/vendor_web.py:", *stale,
              sep="\n  ")
        return 1
    if check:
        print(f"web assets match node_modules and the examples ({len(FILES) + 1} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
