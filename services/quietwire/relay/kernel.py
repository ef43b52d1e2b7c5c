"""Kernel forwarding for settled calls: nftables NAT, conntrack counters.

With ``QW_RELAY_KERNEL_FORWARDING`` a settled call's media no longer passes
through the process at all. The relay keeps one nftables table of its own:

- ``to_peer`` maps (phone address, phone port, relay port) to the other
  phone, ``from_port`` maps the other phone to the relay port it must see as
  the source: DNAT and SNAT of the first packet of a flow; conntrack does the
  rest in both directions (one entry per call);
- ``settled`` holds the relay ports on the kernel path. Packets to any other
  port of the range, and every packet the relay itself sends, are not tracked:
  the sockets and the full path take them as without this mode;
- ZRTP (the cookie ``ZRTP`` at byte 4 of the UDP payload) and STUN (its magic
  cookie at the same place) are never tracked either, so they still reach the
  sockets on a settled call: the relay sees every ZRTP message (Conf2ACK, a
  late GoClear) and forwards it itself.

Counters come from conntrack (``nf_conntrack_acct``): packets and bytes per
direction, polled about once a second; loss and sequence statistics, which
need the packets, are only kept for the full path. When a call's path changes
or the call ends its elements are removed and its conntrack entries deleted,
so no flow outlives its call.

Needs CAP_NET_ADMIN in the relay's network namespace, ``net.ipv4.ip_forward=1``
and ``net.netfilter.nf_conntrack_acct=1`` there, libnftables, and a specific
IPv4 ``QW_RELAY_BIND`` (the SNAT source).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import Conntrack
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

from quietwire.runtime.aio import Tasks

log = logging.getLogger(__name__)
Address = tuple[str, int]
#: conntrack mark of the flows this relay NATs (ASCII "QW").
MARK = 0x51570000
ZRTP_COOKIE, STUN_COOKIE = 0x5A525450, 0x2112A442
SYSCTLS = ("net/ipv4/ip_forward", "net/netfilter/nf_conntrack_acct")


class KernelPathError(Exception):
    """Kernel forwarding is not possible here (why, and what to change)."""


class Nftables:
    """libnftables through ctypes: nft commands, run in this process."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            raise KernelPathError(f"libnftables not found ({exc}): install nftables") from exc
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for function in (lib.nft_ctx_buffer_output, lib.nft_ctx_buffer_error):
            function.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)

    def run(self, commands: str) -> None:
        if self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode()) != 0:
            error = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
            raise KernelPathError(f"nft: {error.decode(errors='replace').strip()}")

    def close(self) -> None:
        if self._ctx:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None


@dataclass(frozen=True)
class Link:
    """A settled call on the kernel path: each phone and its relay port."""

    a: Address
    a_port: int
    b: Address
    b_port: int


@dataclass(frozen=True)
class _Change:
    verb: str  # "add" or "delete" the link's elements
    link: Link
    forget: bool  # delete the link's flows (before an add, after a delete)


class KernelPaths:
    """This relay's nftables table and its conntrack flows."""

    def __init__(self, address: str, first_port: int, last_port: int) -> None:
        self.address = address
        self.ports = f"{first_port}-{last_port}"
        self.table = f"quietwire_relay_{first_port}"
        self._nft: Nftables | None = None
        # pyroute2's netlink sockets need the stock asyncio loop (uvloop has no
        # AF_NETLINK): conntrack is used, blocking, from one thread of its own.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="conntrack")
        self._conntrack: Any = None
        #: Each NATed flow's counters when last read (by conntrack id), and what
        #: flows deleted since counted (by relay port).
        self._seen: dict[int, tuple[int, int, int, int]] = {}
        self._carried: dict[int, tuple[int, int]] = {}
        self._pending: list[_Change] = []
        self._batch: asyncio.Future[None] | None = None
        self._sending = Tasks()

    async def _in_thread(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def start(self) -> None:
        for name in SYSCTLS:
            try:
                value = (Path("/proc/sys") / name).read_text().strip()
            except OSError:
                value = "unreadable"
            if value != "1":
                raise KernelPathError(f"{name.replace('/', '.')} is {value}; it must be 1")
        self._nft = Nftables()
        self._nft.run(self._ruleset())
        self._conntrack = await self._in_thread(Conntrack)

    def _ruleset(self) -> str:
        table, here, ports = self.table, self.address, self.ports
        # Any table left by an earlier relay on these ports (a crash) goes first.
        drop = f"table ip {table}\ndelete table ip {table}\n"
        return (
            drop
            + f"""table ip {table} {{
  set settled {{ type inet_service; }}
  map to_peer {{ type ipv4_addr . inet_service . inet_service : ipv4_addr . inet_service; }}
  map from_port {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; }}
  chain raw_in {{
    type filter hook prerouting priority raw; policy accept;
    ip daddr != {here} return
    udp dport != {ports} return
    udp dport != @settled notrack
    @th,96,32 {{ {ZRTP_COOKIE:#x}, {STUN_COOKIE:#x} }} notrack
  }}
  chain raw_out {{
    type filter hook output priority raw; policy accept;
    ip saddr {here} udp sport {ports} notrack
  }}
  chain nat_in {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {here} ip saddr . udp sport . udp dport @to_peer ct mark set {MARK:#x}
    ip daddr {here} dnat ip to ip saddr . udp sport . udp dport map @to_peer
  }}
  chain nat_out {{
    type nat hook postrouting priority srcnat; policy accept;
    ct mark {MARK:#x} snat ip to ip daddr . udp dport map @from_port
  }}
}}
"""
        )

    async def link(self, link: Link, *, forget: bool) -> None:
        """From now on the kernel forwards between the two phones. ``forget``: flows
        of theirs tracked before (untranslated: they would keep the phones' packets
        off the kernel path) go first — there are none unless the call's ports
        were linked before."""
        await self._change(_Change("add", link, forget))

    async def unlink(self, link: Link) -> None:
        """The kernel forwards nothing of this call any more: its elements and its
        flows are gone (their last counts kept for :meth:`counters`)."""
        await self._change(_Change("delete", link, forget=True))

    def _change(self, change: _Change) -> asyncio.Future[None]:
        """Changes asked during one turn of the event loop go to the kernel together
        (one nftables transaction), after those asked before."""
        loop = asyncio.get_running_loop()
        if self._batch is None:
            self._batch = loop.create_future()
            loop.call_soon(self._send_batch)
        self._pending.append(change)
        return self._batch

    def _send_batch(self) -> None:
        changes, batch = self._pending, self._batch
        self._pending, self._batch = [], None
        assert batch is not None
        self._sending.spawn(self._send(changes, batch))

    async def _send(self, changes: list[_Change], batch: asyncio.Future[None]) -> None:
        try:
            await self._in_thread(self._apply, changes)
        except Exception as exc:  # handed to every change of the batch
            batch.set_exception(exc)
        else:
            batch.set_result(None)

    def _apply(self, changes: list[_Change]) -> None:
        for change in changes:
            if change.verb == "add" and change.forget:
                self._forget_now(change.link)
        assert self._nft is not None
        try:
            self._nft.run("".join(self._elements(change) for change in changes))
        except KernelPathError:
            for change in changes:  # one by one: the others apply, the failure is named
                try:
                    self._nft.run(self._elements(change))
                except KernelPathError as exc:
                    log.warning("kernel path not changed", extra={"error": str(exc)})
        for change in changes:
            if change.verb == "delete":
                self._forget_now(change.link)

    def _elements(self, change: _Change) -> str:
        verb, link = change.verb, change.link
        (a, a_port), (b, b_port), here = link.a, link.b, self.address
        peers = [f"{a} . {a_port} . {link.a_port}", f"{b} . {b_port} . {link.b_port}"]
        sources = [f"{b} . {b_port}", f"{a} . {a_port}"]
        if verb == "add":
            peers = [f"{peers[0]} : {b} . {b_port}", f"{peers[1]} : {a} . {a_port}"]
            sources = [
                f"{sources[0]} : {here} . {link.b_port}",
                f"{sources[1]} : {here} . {link.a_port}",
            ]
        table = f"ip {self.table}"
        return (
            f"{verb} element {table} to_peer {{ {', '.join(peers)} }}\n"
            f"{verb} element {table} from_port {{ {', '.join(sources)} }}\n"
            f"{verb} element {table} settled {{ {link.a_port}, {link.b_port} }}\n"
        )

    def _forget_now(self, link: Link) -> None:
        for (address, port), relay_port in ((link.a, link.a_port), (link.b, link.b_port)):
            flow = NFCTAttrTuple(
                saddr=address,
                daddr=self.address,
                proto=socket.IPPROTO_UDP,
                sport=port,
                dport=relay_port,
            )
            try:
                message = self._conntrack.entry("get", tuple_orig=flow)
                if message is not None:
                    self._count(message, self._carried)
                self._conntrack.entry("del", tuple_orig=flow)
            except NetlinkError as exc:
                if exc.code != errno.ENOENT:
                    log.warning("conntrack entry not deleted", extra={"error": str(exc)})

    async def counters(self) -> dict[int, tuple[int, int]]:
        """Packets and bytes the kernel forwarded since the last call, by the relay
        port they arrived on."""
        counts: dict[int, tuple[int, int]] = await self._in_thread(self._counters_now)
        return counts

    def _counters_now(self) -> dict[int, tuple[int, int]]:
        found, self._carried = self._carried, {}
        seen, self._seen = self._seen, {}
        for message in self._conntrack.dump(mark=MARK):
            self._count(message, found, seen)
        return found

    def _count(
        self,
        message: Any,
        found: dict[int, tuple[int, int]],
        seen: dict[int, tuple[int, int, int, int]] | None = None,
    ) -> None:
        """Add a flow's packets and bytes since it was last counted to ``found``,
        by relay port. ``seen``: where this flow was counted up to (default: the
        current reading's)."""
        if message.get_attr("CTA_MARK") != MARK:
            return
        flow_id = message.get_attr("CTA_ID")
        now = (*_counts(message, "CTA_COUNTERS_ORIG"), *_counts(message, "CTA_COUNTERS_REPLY"))
        before = (seen if seen is not None else self._seen).pop(flow_id, (0, 0, 0, 0))
        if seen is not None:
            self._seen[flow_id] = now
        ports = (
            _dport(message.get_attr("CTA_TUPLE_ORIG")),
            _dport(message.get_attr("CTA_TUPLE_REPLY")),
        )
        for port, packets, octets in (
            (ports[0], now[0] - before[0], now[1] - before[1]),
            (ports[1], now[2] - before[2], now[3] - before[3]),
        ):
            if packets > 0:
                total = found.get(port, (0, 0))
                found[port] = (total[0] + packets, total[1] + octets)

    async def close(self) -> None:
        if self._conntrack is not None:
            await self._in_thread(self._conntrack.close)
        self._thread.shutdown()
        if self._nft is not None:
            try:
                self._nft.run(f"delete table ip {self.table}\n")
            except KernelPathError as exc:
                log.warning("kernel path table not removed", extra={"error": str(exc)})
            self._nft.close()


def _counts(message: Any, name: str) -> tuple[int, int]:
    counters = message.get_attr(name)
    if counters is None:
        return 0, 0
    return (
        int(counters.get_attr("CTA_COUNTERS_PACKETS") or 0),
        int(counters.get_attr("CTA_COUNTERS_BYTES") or 0),
    )


def _dport(tuple_attr: Any) -> int:
    proto = tuple_attr.get_attr("CTA_TUPLE_PROTO")
    return int(proto.get_attr("CTA_PROTO_DST_PORT") or 0)
