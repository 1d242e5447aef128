"""Generate the Python code of proto/ into the client package, the one place it lives.

The proto package root is the Python import root (qruntime.jobs.v1 -> qruntime/jobs/v1/), so the
generated imports work as written. proto/third_party/ holds the google/api protos our HTTP mapping
(google.api.http) needs, copied from the pinned googleapis-common-protos package, whose Python
modules the generated code imports: they are copied, never generated here. Generator versions are
pinned in constraints.txt, so a fresh run reproduces the committed files byte for byte; `--check`
regenerates into a temporary folder and fails on any difference (CI runs it).

    python scripts/gen_protos.py           # regenerate in place
    python scripts/gen_protos.py --check   # fail if the committed code has drifted
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
THIRD_PARTY = PROTO_ROOT / "third_party"
# google/api protos from googleapis-common-protos: the HTTP annotations of our services.
VENDORED = ("google/api/annotations.proto", "google/api/http.proto")
OUT_ROOT = ROOT / "clients" / "python" / "src"
# The top folders under OUT_ROOT/qruntime that hold only generated code.
GENERATED_PACKAGES = ("admin", "auth", "devices", "jobs", "primitives", "programs")


def generate(out_root: Path) -> None:
    """Run protoc with the Python, gRPC and mypy plugins over every .proto file."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "qruntime").rglob("*.proto"))
    well_known = Path(protoc.__file__).parent / "_proto"
    plugins = Path(sys.executable).parent  # mypy-protobuf's plugins sit beside this interpreter
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={plugins / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugins / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_ROOT}",
        f"-I{THIRD_PARTY}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package in GENERATED_PACKAGES:
        for folder in [out_root / "qruntime" / package, *(out_root / "qruntime" / package).rglob("*")]:
            if folder.is_dir():
                (folder / "__init__.py").touch()


def generated_files(root: Path) -> set[Path]:
    return {
        p.relative_to(root)
        for package in GENERATED_PACKAGES
        for p in (root / "qruntime" / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def vendored_source(name: str) -> Path:
    """The installed googleapis-common-protos copy of a vendored proto."""
    import google.api

    return Path(google.api.__path__[0]).parent.parent / name


def vendor() -> None:
    for name in VENDORED:
        (THIRD_PARTY / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(vendored_source(name), THIRD_PARTY / name)


def check() -> int:
    stale = [n for n in VENDORED if not (THIRD_PARTY / n).exists()
             or not filecmp.cmp(vendored_source(n), THIRD_PARTY / n, shallow=False)]
    if stale:
        print("proto/third_party differs from the installed googleapis-common-protos; run scripts/gen_protos.py:",
              *stale, sep="\n  ")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        expected, actual = generated_files(fresh), generated_files(OUT_ROOT)
        drift = sorted(str(p) for p in expected ^ actual)
        drift += sorted(
            str(p) for p in expected & actual if not filecmp.cmp(fresh / p, OUT_ROOT / p, shallow=False)
        )
    if drift:
        print("generated code differs from proto/; run scripts/gen_protos.py:", *drift, sep="\n  ")
        return 1
    print(f"generated code matches proto/ ({len(expected)} files)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed code has drifted")
    if parser.parse_args().check:
        return check()
    for package in GENERATED_PACKAGES:
        shutil.rmtree(OUT_ROOT / "qruntime" / package, ignore_errors=True)
    vendor()
    generate(OUT_ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
