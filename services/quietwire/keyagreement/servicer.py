"""The KeyAgreement gRPC service."""

from __future__ import annotations

from typing import Any

import grpc

from quietwire.keyagreement.calls import CallStore
from quietwire.keyagreement.planner import Planner
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class KeyAgreementServicer(keyagreement_pb2_grpc.KeyAgreementServicer):
    def __init__(self, planner: Planner, store: CallStore) -> None:
        self.planner = planner
        self.store = store

    async def PlanOffer(self, request: pb.PlanOfferRequest, context: Context) -> pb.Plan:
        try:
            return await self.planner.offer(request)
        except grpc.aio.AioRpcError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"relay: {exc.details()}")
            raise

    async def PlanAnswer(self, request: pb.PlanAnswerRequest, context: Context) -> pb.Plan:
        try:
            return await self.planner.answer(request)
        except grpc.aio.AioRpcError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"relay: {exc.details()}")
            raise

    async def EndCall(self, request: pb.EndCallRequest, context: Context) -> pb.EndCallResponse:
        await self.planner.end(request.call_id, request.reason)
        return pb.EndCallResponse()

    async def GetCallSecurity(
        self, request: pb.GetCallSecurityRequest, context: Context
    ) -> pb.CallSecurity:
        record = await self.store.get(request.call_id)
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such call")
        return record.security()

    async def ListCalls(
        self, request: pb.ListCallsRequest, context: Context
    ) -> pb.ListCallsResponse:
        records = await self.store.live(request.limit or 100)
        return pb.ListCallsResponse(calls=[r.security() for r in records])
