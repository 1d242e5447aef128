"""The suite as real OS processes: `qruntime up`, and four services behind the gateway."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from qruntime import IBMRuntimeService
from qruntime.admin.v1 import admin_pb2, admin_service_pb2, admin_service_pb2_grpc
from qruntime.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

from qruntime_suite import launch

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def run_quickstart(launched: launch.Launched, home: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"),
         "--bootstrap", str(launched.data_dir / "bootstrap.json")],
        env={**os.environ, "HOME": str(home)}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def check_quickstart_output(out: str) -> None:
    assert "ibmq_qasm_simulator" in out
    assert out.count("job id: ") == 2
    assert "All done!" in out
    assert "'00'" in out and "'11'" in out


def test_embedded_suite_runs_the_quick_start_and_stops_cleanly(tmp_path):
    launched = launch.embedded(tmp_path / "data")
    try:
        assert stat.S_IMODE((launched.data_dir / "bootstrap.json").stat().st_mode) == 0o600
        check_quickstart_output(run_quickstart(launched, tmp_path / "home"))
    finally:
        codes = launched.stop()
    assert codes == {"suite": 0}


def test_four_processes_behind_the_gateway_run_the_quick_start(tmp_path):
    launched = launch.separate(tmp_path / "data")
    try:
        assert launched.bootstrap["url"] == launched.url
        check_quickstart_output(run_quickstart(launched, tmp_path / "home"))
        # The jobs service recorded the two jobs in the audit trail, at the auth process.
        env = {**os.environ, "QRUNTIME_URL": launched.url, "QRUNTIME_API_KEY": launched.bootstrap["api_key"]}
        audit = subprocess.run([str(Path(sys.executable).with_name("qruntime")), "admin", "--json", "audit", "list",
                                "--filter", "action=quantum-computing.job.create outcome=success"],
                               env=env, capture_output=True, text=True, timeout=60)
        assert audit.returncode == 0, audit.stderr
        assert len(json.loads(audit.stdout)["events"]) == 2
        # programs, signing in with its own key, records a refused call there too.
        with IBMRuntimeService(token=launched.bootstrap["api_key"], instance=launched.bootstrap["instance"],
                               url=launched.url) as service, pytest.raises(Exception, match="no-such-program"):
            service.delete_program("no-such-program")
        audit = subprocess.run([str(Path(sys.executable).with_name("qruntime")), "admin", "--json", "audit", "list",
                                "--filter", "action=quantum-computing.program.delete"],
                               env=env, capture_output=True, text=True, timeout=60)
        assert [e["reason"] for e in json.loads(audit.stdout)["events"]] == ["PROGRAM_NOT_FOUND"]
        # Auth's own port takes audit events and gives out revocations to the suite's services alone.
        auth_url = launched.envs["auth"]["QRUNTIME_AUTH_URL"]
        with grpc.insecure_channel(auth_url) as channel:
            admin = admin_service_pb2_grpc.AdminServiceStub(channel)
            forged = admin_service_pb2.RecordAuditEventsRequest(events=[admin_pb2.AuditEvent(subject="nobody")])
            with pytest.raises(grpc.RpcError) as caught:
                admin.RecordAuditEvents(forged, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            user_token = auth_service_pb2_grpc.AuthServiceStub(channel).CreateToken(
                auth_service_pb2.CreateTokenRequest(api_key=launched.bootstrap["api_key"], account="-"),
                timeout=10).token  # the account owner's token, for the admin service
            with pytest.raises(grpc.RpcError) as caught:
                admin.RecordAuditEvents(forged, metadata=[("authorization", f"Bearer {user_token}")], timeout=10)
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # The front door routes no internal method: a service key is no use from outside.
        with grpc.insecure_channel(launched.url) as channel:
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.CreateServiceToken(auth_service_pb2.CreateServiceTokenRequest(service_key="qrk_x"), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        codes = launched.stop()
    assert codes == dict.fromkeys(["auth", "programs", "devices", "jobs", "gateway"], 0)


def test_a_finished_job_survives_kill_9_of_the_suite(tmp_path):
    data = tmp_path / "data"
    launched = launch.embedded(data)
    try:
        boot = launched.bootstrap
        with IBMRuntimeService(auth="cloud", token=boot["api_key"], instance=boot["instance"], url=launched.url) as s:
            job = s.run(program_id="hello-world", options={"backend_name": "ibmq_qasm_simulator"},
                        inputs={"iterations": 2})
            assert job.result() == "All done!"
            job_id = job.job_id
        os.killpg(launched.processes["suite"].pid, signal.SIGKILL)
    finally:
        launched.stop()
    restarted = launch.embedded(data)
    try:
        with IBMRuntimeService(auth="cloud", token=boot["api_key"], instance=boot["instance"], url=restarted.url) as s:
            again = s.job(job_id)
            assert again.status().name == "DONE"
            assert again.result() == "All done!"
    finally:
        restarted.stop()
