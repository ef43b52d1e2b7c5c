"""relay: SRTP/ZRTP media relays (port pairs, latching, forwarding, classification)."""
