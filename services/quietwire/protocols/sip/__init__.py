"""SIP (RFC 3261) and its extensions, as sans-I/O code."""
