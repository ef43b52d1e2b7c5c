"""The phone's ZID cache on disk (RFC 6189 section 4.9): our ZID and, per peer,
the retained secrets and the SAS-verified flag. One JSON file, mode 0600,
replaced atomically on every change."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from quietwire.protocols.zrtp.cache import CacheEntry


class FileZidCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.zid: bytes = os.urandom(12)
        self.entries: dict[bytes, CacheEntry] = {}
        if path.exists():
            self._load()
        else:
            self._save()

    def _load(self) -> None:
        data = json.loads(self.path.read_text(encoding="utf-8"))
        self.zid = bytes.fromhex(data["zid"])
        for peer, entry in data.get("peers", {}).items():
            self.entries[bytes.fromhex(peer)] = CacheEntry(
                rs1=bytes.fromhex(entry["rs1"]) if entry.get("rs1") else None,
                rs2=bytes.fromhex(entry["rs2"]) if entry.get("rs2") else None,
                sas_verified=bool(entry.get("sas_verified")),
            )

    def _save(self) -> None:
        data = {
            "zid": self.zid.hex(),
            "peers": {
                peer.hex(): {
                    "rs1": e.rs1.hex() if e.rs1 else None,
                    "rs2": e.rs2.hex() if e.rs2 else None,
                    "sas_verified": e.sas_verified,
                }
                for peer, e in self.entries.items()
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".zid-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out)
        os.replace(temporary, self.path)

    def get(self, peer_zid: bytes) -> CacheEntry | None:
        return self.entries.get(peer_zid)

    def put(self, peer_zid: bytes, entry: CacheEntry) -> None:
        self.entries[peer_zid] = entry
        self._save()
