"""quietwire: a secure VoIP hosting platform (SIP over TLS, ZRTP, SRTP relays)."""

__version__ = "0.1.0"
