"""The Node.js client (tests/node/primitives.mjs, @grpc/grpc-js and @grpc/proto-loader with proto/ only)
against a real suite: a Bell circuit in OpenQASM 3 through the sampler, an estimator PUB of Pauli
observables, and a rich error decoded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import google.rpc
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_a_node_client_runs_the_primitives_from_the_protos(start_suite) -> None:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("node and the npm packages (./scripts/setup.sh) are needed for this test")
    suite = start_suite("programs", "devices", "jobs", simulation_memory_bytes=2 << 30)
    key, crn = suite.make_user(instance_name="node")
    env = {**os.environ, "QRUNTIME_URL": suite.address, "QRUNTIME_API_KEY": key, "QRUNTIME_INSTANCE": crn,
           "GOOGLE_PROTOS": str(Path(google.rpc.__path__[0]).parent.parent)}
    ran = subprocess.run([node, str(ROOT / "tests" / "node" / "primitives.mjs")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-4000:]
    found = json.loads(ran.stdout.strip().splitlines()[-1])
    assert set(found["bell"]) == {"00", "11"} and found["error"]["reason"] == "INVALID_QASM"
