"""AuthService over gRPC: translates requests into TokenIssuer and AuthStore calls."""

from __future__ import annotations

import asyncio

from google.protobuf.timestamp_pb2 import Timestamp
from qruntime.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc

from qruntime_kit.auth import current_principal
from qruntime_kit.errors import NotFound

from .store import AuthStore
from .tokens import TokenIssuer

PLANS = {"lite": auth_pb2.PLAN_LITE, "standard": auth_pb2.PLAN_STANDARD}
ROLES = {"reader": auth_pb2.ROLE_READER, "writer": auth_pb2.ROLE_WRITER, "manager": auth_pb2.ROLE_MANAGER}


def instance_message(row: dict) -> auth_pb2.Instance:
    created = Timestamp()
    created.FromDatetime(row["create_time"])
    return auth_pb2.Instance(crn=row["crn"], name=row["name"], account_id=row["account_id"],
                             plan=PLANS[row["plan"]], create_time=created)


class AuthServicer(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(self, store: AuthStore, issuer: TokenIssuer) -> None:
        self._store = store
        self._issuer = issuer

    async def CreateToken(self, request, context):
        token, expiry, row, role = await asyncio.to_thread(self._issuer.create_token, request.api_key, request.instance)
        response = auth_service_pb2.CreateTokenResponse(token=token, expire_time=Timestamp(seconds=expiry))
        if row is not None:
            response.instance.CopyFrom(instance_message(row))
            response.role = ROLES[role]
        return response

    async def ListSigningKeys(self, request, context):
        keys = await asyncio.to_thread(self._store.signing_keys)
        response = auth_service_pb2.ListSigningKeysResponse()
        for key in keys:
            created = Timestamp()
            created.FromDatetime(key["create_time"])
            response.signing_keys.add(key_id=key["key_id"], algorithm="EdDSA",
                                      public_key_pem=key["public_key_pem"], create_time=created)
        return response

    async def GetInstance(self, request, context):
        principal = current_principal()
        wanted = request.instance or principal.instance_crn
        row = await asyncio.to_thread(self._store.find_instance, principal.account_id, wanted)
        if row is None or row["crn"] != principal.instance_crn:
            raise NotFound(f"instance {wanted!r} not found", reason="INSTANCE_NOT_FOUND", metadata={"instance": wanted})
        return auth_service_pb2.GetInstanceResponse(instance=instance_message(row))
