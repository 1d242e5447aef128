"""TLS between separate processes: four services and the gateway each serve TLS with a certificate
our test CA signed, call each other over TLS trusting only that CA, and the client takes the bundle."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from qruntime import IBMRuntimeService
from qruntime.exceptions import RuntimeServiceError

from qruntime_suite import launch

pytestmark = pytest.mark.slow


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca_and_certificate(folder: Path, name: str = "qruntime test CA") -> dict[str, Path]:
    """A CA, and a certificate it signed for 127.0.0.1 and localhost: PEM files in folder."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    paths["key"].chmod(0o600)
    return paths


def test_separate_processes_speak_tls_and_the_client_takes_a_ca_bundle(tmp_path):
    pki = make_ca_and_certificate(tmp_path / "pki")
    env = {"QRUNTIME_TLS_CERT_FILE": str(pki["cert"]), "QRUNTIME_TLS_KEY_FILE": str(pki["key"]),
           "QRUNTIME_TLS_CA_FILE": str(pki["ca"])}
    launched = launch.separate(tmp_path / "data", extra_env=env)
    try:
        boot = launched.bootstrap
        with IBMRuntimeService(token=boot["api_key"], instance=boot["instance"], url=launched.url,
                               ca_file=str(pki["ca"])) as service:
            # The job crosses every hop: client -> gateway -> jobs -> programs, devices (and auth).
            job = service.run(program_id="hello-world", options={"backend_name": "ibmq_qasm_simulator"},
                              inputs={"iterations": 1})
            assert job.result() == "All done!"
        with pytest.raises(RuntimeServiceError):  # plaintext to a TLS port: no answer
            IBMRuntimeService(token=boot["api_key"], instance=boot["instance"], url=launched.url, timeout=5)
        other = make_ca_and_certificate(tmp_path / "other", "someone else's CA")
        with pytest.raises(RuntimeServiceError):  # a certificate our bundle did not sign: refused
            IBMRuntimeService(token=boot["api_key"], instance=boot["instance"], url=launched.url, timeout=5,
                              ca_file=str(other["ca"]))
        admin = subprocess.run(
            [str(Path(sys.executable).with_name("qruntime")), "admin", "--json", "--ca-file", str(pki["ca"]),
             "instance", "list"],
            env={**os.environ, "QRUNTIME_URL": launched.url, "QRUNTIME_API_KEY": boot["api_key"]},
            capture_output=True, text=True, timeout=60)
        assert admin.returncode == 0 and '"standard"' in admin.stdout, admin.stderr
        for name in ("auth", "jobs"):  # the services' own ports serve TLS too
            address = f"127.0.0.1:{_port_of(launched, name)}"
            with grpc.insecure_channel(address) as plain:
                with pytest.raises(grpc.FutureTimeoutError):
                    grpc.channel_ready_future(plain).result(timeout=2)
    finally:
        codes = launched.stop()
    assert set(codes.values()) == {0}


def test_a_key_file_others_can_read_stops_the_server(tmp_path):
    pki = make_ca_and_certificate(tmp_path / "pki")
    pki["key"].chmod(0o644)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("qruntime-auth")), "--port", "0", "--data-dir", str(tmp_path / "d")],
        env={**os.environ, "QRUNTIME_TLS_CERT_FILE": str(pki["cert"]), "QRUNTIME_TLS_KEY_FILE": str(pki["key"])},
        capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "server.key" in done.stderr and "chmod 600" in done.stderr


def _port_of(launched: launch.Launched, name: str) -> int:
    args = launched.processes[name].args
    return int(args[args.index("--port") + 1])
