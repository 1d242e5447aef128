"""Generate the OpenAPI 3 document of the HTTP/JSON API from proto/ (services/suite/openapi.py).

The routes come from the generated Python modules' google.api.http annotations, the descriptions
from the .proto files' comments (protoc's source info). `--check` fails if the committed document
differs from a fresh one (CI runs it after gen_protos.py --check).

    python scripts/gen_openapi.py           # write services/suite/web/openapi.json
    python scripts/gen_openapi.py --check   # fail if it has drifted
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from qruntime_suite.openapi import document
from qruntime_suite.rest import OPENAPI_FILE
from qruntime_suite.transcoding import routes

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
VERSION = "v1"


def comments() -> dict[str, str]:
    """Each element's leading comment, by full name (enum values as <enum>.<VALUE>)."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "qruntime").rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.binpb"
        args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{PROTO_ROOT / 'third_party'}",
                f"-I{Path(protoc.__file__).parent / '_proto'}", "--include_source_info",
                f"--descriptor_set_out={out}", *protos]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    found: dict[str, str] = {}
    for file in files:
        names = _names(file)
        for location in file.source_code_info.location:
            name = names.get(tuple(location.path))
            if name and location.leading_comments.strip():
                found[name] = " ".join(line.strip() for line in location.leading_comments.strip().splitlines())
    return found


def _names(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Source-info paths of the file's elements -> their full names."""
    names: dict[tuple[int, ...], str] = {}

    def enum(path, prefix, e):
        names[path] = f"{prefix}.{e.name}"
        for j, v in enumerate(e.value):
            names[(*path, 2, j)] = f"{prefix}.{e.name}.{v.name}"

    def message(path, prefix, m):
        full = f"{prefix}.{m.name}"
        names[path] = full
        for j, f in enumerate(m.field):
            names[(*path, 2, j)] = f"{full}.{f.name}"
        for j, nested in enumerate(m.nested_type):
            message((*path, 3, j), full, nested)
        for j, e in enumerate(m.enum_type):
            enum((*path, 4, j), full, e)

    for i, m in enumerate(file.message_type):
        message((4, i), file.package, m)
    for i, e in enumerate(file.enum_type):
        enum((5, i), file.package, e)
    for i, s in enumerate(file.service):
        names[(6, i)] = f"{file.package}.{s.name}"
        for j, method in enumerate(s.method):
            names[(6, i, 2, j)] = f"{file.package}.{s.name}.{method.name}"
    return names


def render() -> str:
    return json.dumps(document(routes(), comments(), VERSION), indent=1, sort_keys=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed document has drifted")
    fresh = render()
    if parser.parse_args().check:
        if not OPENAPI_FILE.exists() or OPENAPI_FILE.read_text() != fresh:
            print(f"{OPENAPI_FILE.relative_to(ROOT)} differs from proto/; run scripts/gen_openapi.py")
            return 1
        print(f"OpenAPI document matches proto/ ({OPENAPI_FILE.relative_to(ROOT)})")
        return 0
    OPENAPI_FILE.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
