"""Requests whose bytes are not the message their method takes (corrupt protobuf, a string field
holding invalid UTF-8): the caller's INVALID_ARGUMENT, not gRPC's UNKNOWN.

gRPC decodes a request before any interceptor sees it and answers a decoding failure UNKNOWN with
the parser's words. The server's interceptor (kit.interceptors) gives each unary request's decoder a
twin (tolerant) that hands a failure on as an Undecodable value instead, and refuses that value
before the servicer runs. Requests that stream in are decoded one message at a time by the
servicer's own loop, and are left as they are.

The other way, a method that streams its responses may send ones it encoded itself (Encoded): one
encoding shared by many streams (WatchJob's watchers of one job), which gRPC would otherwise encode
again for each."""

from __future__ import annotations

from collections.abc import Callable


class Encoded:
    """A response message already encoded (data: its SerializeToString), sent as it is. Not a bytes
    subclass: gRPC sends exact bytes only, and copying them for each stream is what this saves."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Undecodable:
    """A request that could not be decoded, and why."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def passing_encoded(serialize: Callable[[object], bytes]) -> Callable[[object], bytes]:
    def encode(response: object) -> bytes:
        return response.data if isinstance(response, Encoded) else serialize(response)

    return encode


def tolerant(deserialize: Callable[[bytes], object]) -> Callable[[bytes], object]:
    def decode(data: bytes) -> object:
        try:
            return deserialize(data)
        except Exception as err:  # protobuf's DecodeError, or anything a decoder raises on bad bytes
            return Undecodable(err)

    return decode
