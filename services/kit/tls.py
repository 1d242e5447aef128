"""TLS for every server and every call between services.

A server given a certificate and its key (`--tls-cert-file`, `--tls-key-file`) serves TLS only; a
process given a CA bundle (`--tls-ca-file`) calls the others over TLS, accepts only certificates
that bundle signed, and presents its own certificate as a client certificate. Services behind the
gateway may require one (`--tls-verify-clients`): then only the suite's own processes reach them.
Without any of this everything stays plaintext, which is fine on loopback (the embedded suite's
default) and nowhere else.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from .secrets import check_private


def _pair(cert_file: str, key_file: str) -> tuple[bytes, bytes] | None:
    """(key, certificate chain) PEM bytes, or None when neither file is given; the key must be owner-only."""
    if not (cert_file or key_file):
        return None
    if not (cert_file and key_file):
        raise SystemExit("qruntime: give both --tls-cert-file and --tls-key-file, or neither")
    check_private(Path(key_file))
    return Path(key_file).read_bytes(), Path(cert_file).read_bytes()


def server_credentials(cert_file: str, key_file: str, client_ca_file: str = "") -> grpc.ServerCredentials | None:
    """TLS credentials for a server, or None for plaintext. With client_ca_file, callers must present
    a certificate that bundle signed."""
    pair = _pair(cert_file, key_file)
    if pair is None:
        if client_ca_file:
            raise SystemExit("qruntime: --tls-verify-clients needs --tls-cert-file and --tls-key-file")
        return None
    if not client_ca_file:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials([pair], root_certificates=Path(client_ca_file).read_bytes(),
                                       require_client_auth=True)


def channel_credentials(ca_file: str, cert_file: str = "", key_file: str = "") -> grpc.ChannelCredentials | None:
    """TLS credentials trusting the CA bundle, presenting this process's certificate when it has
    one; None for plaintext."""
    if not ca_file:
        return None
    pair = _pair(cert_file, key_file)
    return grpc.ssl_channel_credentials(Path(ca_file).read_bytes(), *(pair or (None, None)))


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
