"""signaling: the SIP-over-TLS front ends (registrar, proxy)."""
