"""TLS for every server and every call between services.

A server given a certificate and its key (`--tls-cert-file`, `--tls-key-file`) serves TLS only; a
process given a CA bundle (`--tls-ca-file`) calls the others over TLS and accepts only certificates
that bundle signed. Without them everything stays plaintext, which is fine on loopback (the embedded
suite's default) and nowhere else.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from .secrets import check_private


def server_credentials(cert_file: str, key_file: str) -> grpc.ServerCredentials | None:
    """TLS credentials for a server, or None for plaintext; the key must be owner-only."""
    if not (cert_file or key_file):
        return None
    if not (cert_file and key_file):
        raise SystemExit("qruntime: give both --tls-cert-file and --tls-key-file, or neither")
    check_private(Path(key_file))
    return grpc.ssl_server_credentials([(Path(key_file).read_bytes(), Path(cert_file).read_bytes())])


def channel_credentials(ca_file: str) -> grpc.ChannelCredentials | None:
    """TLS credentials trusting the CA bundle, or None for plaintext."""
    return grpc.ssl_channel_credentials(Path(ca_file).read_bytes()) if ca_file else None


def aio_channel(address: str, credentials: grpc.ChannelCredentials | None, options) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, credentials, options=options)


def channel(address: str, credentials: grpc.ChannelCredentials | None, options=()) -> grpc.Channel:
    if credentials is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, credentials, options=options)


def add_port(server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)
