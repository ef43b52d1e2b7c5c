"""Short authentication string renderings (RFC 6189 section 5.1.6)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from quietwire.protocols.zrtp.algorithms import SasType

#: Base32 alphabet of section 5.1.6, chosen so that letters read aloud well.
B32_ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"


def render_b32(sas_value: int) -> str:
    """The leftmost 20 bits of ``sas_value`` as 4 characters, 5 bits each."""
    return "".join(B32_ALPHABET[(sas_value >> shift) & 0x1F] for shift in (27, 22, 17, 12))


@cache
def pgp_words() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The PGP word list (Juola and Zimmermann, public domain): even and odd words."""
    even: list[str] = []
    odd: list[str] = []
    text = files("quietwire.protocols.zrtp").joinpath("pgp-words.tsv").read_text("utf-8")
    for line in text.splitlines():
        if line and not line.startswith("#"):
            _, e, o = line.split("\t")
            even.append(e)
            odd.append(o)
    if len(even) != 256:
        raise RuntimeError("PGP word list must have 256 entries")
    return tuple(even), tuple(odd)


def render_b256(sas_value: int) -> str:
    """The leftmost 16 bits as two PGP words: the even word, then the odd word."""
    even, odd = pgp_words()
    return f"{even[(sas_value >> 24) & 0xFF]} {odd[(sas_value >> 16) & 0xFF]}"


def render(sas_type: SasType, sas_value: int) -> str:
    return render_b32(sas_value) if sas_type is SasType.B32 else render_b256(sas_value)
