"""docs/errors.md, the table of error reasons, is generated from the code and cannot drift from it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_error_table_matches_the_code() -> None:
    ran = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_error_docs.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr


def test_every_reason_the_primitives_contract_names_is_in_the_table() -> None:
    table = set(re.findall(r"^\| `([A-Z_]+)` \|", (ROOT / "docs" / "errors.md").read_text(), re.M))
    header = (ROOT / "proto" / "qruntime" / "primitives" / "v1" / "primitives.proto").read_text().split("message ")[0]
    named = set(re.findall(r"\b([A-Z][A-Z_]{5,})\b", header.split("Reasons:")[1]))
    assert len(named) >= 15 and named <= table, sorted(named - table)
    assert {"INVALID_QASM", "SHAPES_DO_NOT_BROADCAST", "PRIMITIVE_PROGRAM_MISMATCH"} <= table
