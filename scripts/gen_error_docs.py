"""Generate docs/errors.md, the table of every error reason the services raise, from their code.

Each reason is found where it is raised: an error class of qruntime_kit.errors called with
`reason="SOME_REASON"` (the table states the class's gRPC code), or a PubError of the devices'
primitives (INVALID_ARGUMENT, its reason the fifth argument). The message shown is the call's own,
its formatted parts written as `…`. So the table cannot drift from the code: `--check` (run by
tests/kit/test_error_docs.py) fails when the committed table differs from a fresh one.

    python scripts/gen_error_docs.py           # rewrite docs/errors.md
    python scripts/gen_error_docs.py --check   # fail if it is out of date
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "services"
OUT = ROOT / "docs" / "errors.md"
# The error classes of qruntime_kit.errors and their codes (read from its source, not imported).
PUB_ERROR = "PubError"

HEADER = """# Error reasons

Every error a qruntime service returns carries a `google.rpc.ErrorInfo` whose `reason` is one of
these (its `domain` is `<service>.qruntime`, its `metadata` the details the message names), and,
where a request field is at fault, a `google.rpc.BadRequest` naming it. A reason keeps its meaning;
the messages are for people and may change.

Generated from the code by `scripts/gen_error_docs.py` (a test fails when it is out of date): the
code is the gRPC status the reason is raised with, the message the shortest the code writes for it,
`…` standing for the parts it fills in.

| reason | code | raised in | message |
| --- | --- | --- | --- |
"""


def error_codes() -> dict[str, str]:
    """Error class name -> gRPC code name, from qruntime_kit/errors.py's `code = grpc.StatusCode.X` lines."""
    tree = ast.parse((SERVICES / "kit" / "errors.py").read_text())
    codes = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if (isinstance(item, ast.AnnAssign | ast.Assign) and isinstance(item.value, ast.Attribute)
                        and isinstance(item.value.value, ast.Attribute) and item.value.value.attr == "StatusCode"):
                    codes[node.name] = item.value.attr
    codes[PUB_ERROR] = codes.get("InvalidArgument", "INVALID_ARGUMENT")
    return codes


def _text(node: ast.AST | None) -> str:
    """A message argument as text, formatted parts as `…`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "…" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text(node.left) + _text(node.right)
    return "…"


def raised() -> dict[str, dict[str, set[str]]]:
    """reason -> {"codes", "where", "messages"}."""
    codes = error_codes()
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: {"codes": set(), "where": set(), "messages": set()})
    for path in sorted(SERVICES.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            reason = next((k.value.value for k in node.keywords if k.arg == "reason"
                           and isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)), None)
            message = node.args[0] if node.args else None
            if reason is None and name == PUB_ERROR and len(node.args) >= 5 and isinstance(node.args[4], ast.Constant):
                reason, message = node.args[4].value, node.args[3]
            if reason is None or not reason.isupper() or name not in codes:
                continue  # not an error: a job's stored JobReason, say
            entry = found[reason]
            entry["codes"].add(codes[name])
            entry["where"].add(path.relative_to(SERVICES).parts[0])
            text = " ".join(_text(message).split())
            if text and text != "…":
                entry["messages"].add(text if len(text) <= 140 else text[:139] + "…")
    return found


def render() -> str:
    rows = []
    for reason, entry in sorted(raised().items()):
        codes = sorted(entry["codes"])
        message = min(entry["messages"], key=lambda m: (len(m), m), default="").replace("|", "\\|")
        rows.append(f"| `{reason}` | {', '.join(codes)} | {', '.join(sorted(entry['where']))} | {message} |\n")
    return HEADER + "".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/errors.md is out of date")
    args = parser.parse_args()
    fresh = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != fresh:
            print("docs/errors.md is out of date; run scripts/gen_error_docs.py", file=sys.stderr)
            return 1
        print(f"docs/errors.md matches the code ({fresh.count(chr(10)) - HEADER.count(chr(10))} reasons)")
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
