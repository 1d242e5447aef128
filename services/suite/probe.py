"""Exit 0 when the gRPC server at ADDRESS reports SERVING on the standard health check.

    python -m qruntime_suite.probe 127.0.0.1:8443 [service]

Over TLS when QRUNTIME_TLS_CA_FILE names a CA bundle (as the services themselves call each other).
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qruntime_kit import tls


def is_serving(address: str, service: str = "", timeout: float = 2.0, ca_file: str = "") -> bool:
    with tls.channel(address, tls.channel_credentials(ca_file)) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


if __name__ == "__main__":
    sys.exit(0 if is_serving(*sys.argv[1:3], ca_file=os.environ.get("QRUNTIME_TLS_CA_FILE", "")) else 1)
