"""SDP (RFC 8866): parse, inspect and rewrite session descriptions, sans-I/O."""
