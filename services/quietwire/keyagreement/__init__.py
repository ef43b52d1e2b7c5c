"""keyagreement: the security plan of every call (mode, relay, ZRTP binding, downgrades)."""
