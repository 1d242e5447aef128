"""What the devices service and its simulation workers say to each other over a worker's channel.

Each frame is one tag byte and a body. The service sends trusted things (its own settings as JSON,
its own adapters pickled) and requests; a worker answers only with protobuf messages, which the
service parses and never unpickles: a worker decodes and runs the caller's circuits, so whatever it
sends is treated as hostile.

    service -> worker                                 worker -> service
    HELLO   JSON settings                             READY   (empty), once started
    ADAPTER name, NUL, pickled adapter              READY, or ERROR
    WARM    backend name                              READY, or ERROR
    CHECK   CheckCircuitsRequest                      CHECKED CheckCircuitsResponse, or ERROR
    RUN     budget (8 bytes), RunCircuitsRequest      CHECKED CheckCircuitsResponse, or ERROR;
    GO      (empty), once the run may have its memory  then RAN RunCircuitsResponse, or ERROR
    ERROR is a google.rpc.Status with an ErrorInfo and, where a field is at fault, a BadRequest.
A worker that dies before CHECKED died of the input (decoding, checking); after it, of the simulation.
The budget (big-endian, unsigned) is simulation memory the service already holds for the run: when the
run needs no more than that (needs(checked) <= budget), no GO is sent and the worker simulates right
after CHECKED, so a small run (an iterative program's step) waits for no round trip; else it waits for GO.
"""

from __future__ import annotations

import struct

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from qruntime.devices.v1.devices_service_pb2 import CheckCircuitsResponse

from qruntime_kit.errors import FailedPrecondition, Internal, InvalidArgument, ResourceExhausted, ServiceError

HELLO, ADAPTER, WARM, CHECK, RUN, GO = b"H", b"A", b"W", b"C", b"R", b"G"
EXIT_OUT_OF_MEMORY = 3  # a worker's exit status after a MemoryError (address-space limit, no cgroup)
READY, CHECKED, RAN, ERROR = b"O", b"K", b"D", b"E"
# The codes a worker may answer with; anything else becomes INTERNAL, so that a worker cannot pass
# itself off as, say, an authentication failure of the suite.
_WORKER_CODES = {cls.code.value[0]: cls for cls in (InvalidArgument, ResourceExhausted, FailedPrecondition, Internal)}
_STATUS_KEY = "grpc-status-details-bin"


_BUDGET = struct.Struct(">Q")


def run_frame(budget: int, request: bytes) -> bytes:
    """A RUN frame: the memory held for the run, and the serialized RunCircuitsRequest."""
    return RUN + _BUDGET.pack(budget) + request


def run_body(body: bytes) -> tuple[int, bytes]:
    """(budget, serialized RunCircuitsRequest) of a RUN frame's body."""
    if len(body) < _BUDGET.size:
        raise ProtocolError("a RUN frame without its budget")
    return _BUDGET.unpack_from(body)[0], body[_BUDGET.size:]


def needs(checked: CheckCircuitsResponse) -> int:
    """The simulation memory a checked run needs: its largest circuit's (Aer runs them in turn)."""
    return max((c.estimated_memory_bytes for c in checked.circuits), default=0)


class ProtocolError(Exception):
    """A worker sent something that is not a well-formed answer."""


def split(frame: bytes) -> tuple[bytes, bytes]:
    """(tag, body) of a frame."""
    if not frame:
        raise ProtocolError("an empty frame")
    return frame[:1], frame[1:]


def error_frame(error: ServiceError) -> bytes:
    """ERROR and the google.rpc.Status the service would send for error (messages clipped alike)."""
    status = error.to_status("")
    return ERROR + dict(status.trailing_metadata)[_STATUS_KEY]


def error_from_worker(body: bytes) -> ServiceError:
    """The ServiceError in a worker's ERROR frame; its domain becomes the service's own."""
    try:
        status = status_pb2.Status.FromString(body)
    except DecodeError:
        raise ProtocolError("an ERROR frame that is not a google.rpc.Status") from None
    cls = _WORKER_CODES.get(status.code, Internal)
    reason, metadata, violations = grpc.StatusCode.INTERNAL.name, {}, []
    for detail in status.details:
        info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason, metadata = info.reason or reason, dict(info.metadata)
        elif detail.Unpack(bad):
            violations = [(v.field, v.description) for v in bad.field_violations]
    return cls(status.message or "the simulation worker failed", reason=reason, metadata=metadata,
               field_violations=violations)
