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

Any live signaling worker can end an established call: its dialog is in
Redis, and the worker hands each BYE to the worker holding that phone's flow
(``Deliver``). A call still ringing only the worker of its INVITE can end, so
each call is asked of its own worker first (the ``replica`` keyagreement
lists), then of the others in turn while one does not answer: a dead or
restarting worker (the first one, say) loses no farewell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

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
#: Seconds one worker gets to end one call before the next worker is asked (a
#: stopped one does not answer at all; a dead one is refused at once).
ASK_TIMEOUT = 2.0


def asked_in_turn(replica: str, workers: Mapping[str, str]) -> list[str]:
    """The gRPC addresses to ask to end a call of ``replica``, in turn: its own
    worker's first, if it is among the live ``workers`` (replica id -> address)."""
    own = workers.get(replica)
    return ([own] if own else []) + [address for address in workers.values() if address != own]


async def end_calls(
    keyagreement: str,
    workers: Mapping[str, str],
    tls: TlsFiles,
    timeout: float = FAREWELL_TIMEOUT,
) -> int:
    """End every live call (BYE with a Reason to both phones) through the live
    signaling ``workers`` (replica id -> gRPC address); how many were ended."""
    try:
        async with asyncio.timeout(timeout):
            return await _end_calls(keyagreement, workers, tls)
    except TimeoutError:
        log.warning("calls not all ended in time", extra={"timeout": timeout})
    except grpc.aio.AioRpcError as exc:
        log.warning(
            "calls not ended: keyagreement did not list them", extra={"code": exc.code().name}
        )
    return 0


async def _end_calls(keyagreement: str, workers: Mapping[str, str], tls: TlsFiles) -> int:
    async with contextlib.AsyncExitStack() as stack:
        listing = await stack.enter_async_context(open_channel(keyagreement, tls))
        listed = await keyagreement_pb2_grpc.KeyAgreementStub(listing).ListCalls(
            keyagreement_pb2.ListCallsRequest(limit=MOST_CALLS)
        )
        if not listed.calls:
            return 0
        stubs = {
            address: signaling_pb2_grpc.SignalingStub(
                await stack.enter_async_context(open_channel(address, tls))
            )
            for address in workers.values()
        }
        slots = asyncio.Semaphore(CONCURRENT)

        async def end(call: keyagreement_pb2.CallSecurity) -> bool:
            request = signaling_pb2.TerminateCallRequest(call_id=call.call_id, reason=STOPPING)
            code = "no live signaling worker"
            async with slots:
                for address in asked_in_turn(call.replica, workers):
                    try:
                        answer = await stubs[address].TerminateCall(request, timeout=ASK_TIMEOUT)
                        return bool(answer.found)
                    except grpc.aio.AioRpcError as exc:
                        code = exc.code().name
            log.warning("call not ended", extra={"call_id": call.call_id, "code": code})
            return False

        ended = sum(await asyncio.gather(*(end(call) for call in listed.calls)))
        log.info(f"ended {ended} of {len(listed.calls)} calls", extra={"calls": len(listed.calls)})
        return ended
