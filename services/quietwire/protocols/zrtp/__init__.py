"""ZRTP (RFC 6189): media-path key agreement for SRTP, sans-I/O.

- :mod:`.packet`: the envelope (header, magic cookie, CRC-32C).
- :mod:`.messages`: every message of section 5, parse and serialize.
- :mod:`.algorithms`: hash, cipher, auth tag, key agreement and SAS types,
  and their negotiation (section 4.1.2).
- :mod:`.keyagreement`: DH2k/DH3k/EC25/EC38/X255 public values and results.
- :mod:`.kdf`: the hash chain, MACs, hvi, KDF, s0 and every derived key.
- :mod:`.sas`: B32 and B256 renderings of the SAS.
- :mod:`.engine`: the protocol state machine (section 4) with T1/T2 timers.
"""
