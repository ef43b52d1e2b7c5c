"""Before ``quietwire up`` stops its services, it ends every live call.

Each phone of each call keyagreement lists (``ListCalls``) gets a BYE from
signaling (``TerminateCall``, the path keyagreement uses to end a call), as
if from the other party, carrying a ``Reason`` header (RFC 3326)::

    Reason: SIP;cause=200;text="platform stopping"

``cause=200`` is what every BYE the platform sends carries (signaling's
``Dialog.byes``): the call ended normally, by the platform rather than a
phone; ``text`` says why. Without it, phones sat in a dead call until their
own timers. The relay's ports and the call's record go with the call, so the
next ``up`` on the same state lists no ghost. All of it is bounded by
:data:`FAREWELL_TIMEOUT`: a service that does not answer does not hold up
the stop.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from quietwire.rpc.keyagreement.v1 import keyagreement_pb2, keyagreement_pb2_grpc
from quietwire.rpc.signaling.v1 import signaling_pb2, signaling_pb2_grpc
from quietwire.runtime.channels import open_channel
from quietwire.runtime.tls import TlsFiles

log = logging.getLogger(__name__)

#: The ``text`` of the Reason header on the BYEs.
STOPPING = "platform stopping"
#: Seconds, in all, that ending the calls may take before the services stop anyway.
FAREWELL_TIMEOUT = 5.0
#: Calls ended at most (ListCalls' limit).
MOST_CALLS = 10_000
#: TerminateCall requests in flight at once.
CONCURRENT = 32


async def end_calls(
    keyagreement: str, signaling: str, tls: TlsFiles, timeout: float = FAREWELL_TIMEOUT
) -> int:
    """End every live call (BYE with a Reason to both phones); how many were ended."""
    try:
        async with asyncio.timeout(timeout):
            return await _end_calls(keyagreement, signaling, tls)
    except TimeoutError:
        log.warning("calls not all ended in time", extra={"timeout": timeout})
    except grpc.aio.AioRpcError as exc:
        log.warning(
            "calls not ended: keyagreement did not list them", extra={"code": exc.code().name}
        )
    return 0


async def _end_calls(keyagreement: str, signaling: str, tls: TlsFiles) -> int:
    async with open_channel(keyagreement, tls) as listing, open_channel(signaling, tls) as ending:
        listed = await keyagreement_pb2_grpc.KeyAgreementStub(listing).ListCalls(
            keyagreement_pb2.ListCallsRequest(limit=MOST_CALLS)
        )
        calls = [call.call_id for call in listed.calls]
        if not calls:
            return 0
        stub = signaling_pb2_grpc.SignalingStub(ending)
        slots = asyncio.Semaphore(CONCURRENT)

        async def end(call_id: str) -> bool:
            request = signaling_pb2.TerminateCallRequest(call_id=call_id, reason=STOPPING)
            async with slots:
                try:
                    return bool((await stub.TerminateCall(request)).found)
                except grpc.aio.AioRpcError as exc:
                    log.warning(
                        "call not ended",
                        extra={"call_id": call_id, "code": exc.code().name},
                    )
                    return False

        ended = sum(await asyncio.gather(*(end(call_id) for call_id in calls)))
        log.info(f"ended {ended} of {len(calls)} calls", extra={"calls": len(calls)})
        return ended
