"""What the programs service tests share: a caller with its credentials, and a world of callers."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from qruntime.programs.v1 import program_pb2, programs_service_pb2_grpc
from qruntime.programs.v1 import programs_service_pb2 as pb

from qruntime_kit.errors import ServiceError, from_rpc_error

SOURCE = "def main(backend, user_messenger, **inputs):\n    return inputs['x'] * 2\n"
BUILTIN_IDS = ["estimator", "hello-world", "sampler"]


@dataclasses.dataclass
class Caller:
    """One caller's stub and credentials."""

    stub: programs_service_pb2_grpc.ProgramsServiceStub
    metadata: tuple[tuple[str, str], ...]
    instance: str = ""

    def __getattr__(self, method):
        rpc = getattr(self.stub, method)
        return lambda request: rpc(request, metadata=self.metadata, timeout=10)

    def error(self, method: str, request) -> ServiceError:
        with pytest.raises(grpc.RpcError) as caught:
            getattr(self, method)(request)
        return from_rpc_error(caught.value)

    def create(self, name: str = "doubler", **fields) -> program_pb2.Program:
        values = {
            "name": name,
            "data": SOURCE,
            "max_execution_time": duration_pb2.Duration(seconds=120),
            "inputs": [program_pb2.ProgramInput(name="x", type=program_pb2.INPUT_TYPE_INTEGER,
                                                required=True)],
            **fields,
        }
        return self.CreateProgram(pb.CreateProgramRequest(program=program_pb2.Program(**values))).program

    def get(self, program_id: str, version: int = 0) -> program_pb2.Program:
        return self.GetProgram(pb.GetProgramRequest(program_id=program_id, version=version)).program

    def list_ids(self) -> list[str]:
        return [p.id for p in self.ListPrograms(pb.ListProgramsRequest(page_size=200)).programs]


@dataclasses.dataclass
class World:
    me: Caller  # the bootstrap user: Manager on a Lite instance
    other: Caller  # Manager on another account's instance
    reader: Caller  # Reader on a third instance
    service: Caller  # a service token, as the jobs service holds
    anonymous: Caller  # no token at all
    channel: grpc.Channel  # theirs, closed by close()

    def close(self) -> None:
        self.channel.close()


def make_world(suite) -> World:
    """The callers of a running suite serving programs, on one channel (World.close() closes it)."""
    channel = suite.channel()
    stub = programs_service_pb2_grpc.ProgramsServiceStub(channel)
    other_key, other_instance = suite.make_user(instance_name="other")
    reader_key, reader_instance = suite.make_user(role="reader", instance_name="readers")
    return World(
        me=Caller(stub, suite.metadata(), suite.instance),
        other=Caller(stub, suite.metadata(suite.token(other_key, other_instance)), other_instance),
        reader=Caller(stub, suite.metadata(suite.token(reader_key, reader_instance)), reader_instance),
        service=Caller(stub, suite.metadata(suite.token(suite.service_key))),
        anonymous=Caller(stub, ()),
        channel=channel,
    )


def assert_error(err: ServiceError, code: grpc.StatusCode, reason: str) -> None:
    assert (err.code, err.reason) == (code, reason), err.message


def update(program: program_pb2.Program, *paths: str) -> pb.UpdateProgramRequest:
    return pb.UpdateProgramRequest(program=program, update_mask=field_mask_pb2.FieldMask(paths=list(paths)))
