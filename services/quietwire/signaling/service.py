"""``quietwire signaling``: the SIP-TLS front end.

So far the chassis only: it loads the SIP certificate (failing fast when it
cannot) and reports ready while Redis answers. The registrar and proxy come
with their own issue.
"""

from __future__ import annotations

import ssl

from quietwire.runtime.redisclient import RedisBackedService
from quietwire.runtime.settings import SettingsError, env_name
from quietwire.signaling.settings import SignalingSettings


def sip_tls_context(settings: SignalingSettings) -> ssl.SSLContext:
    """Server-side TLS for SIP (RFC 5630): TLS 1.2 or newer, modern ciphers."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.sip_tls_cert, settings.sip_tls_key)
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(
            f"invalid setting {env_name('sip_tls_cert')}/{env_name('sip_tls_key')}:"
            f" cannot load the certificate and key: {exc}"
        ) from exc
    return context


class SignalingService(RedisBackedService):
    def __init__(self, settings: SignalingSettings) -> None:
        self.tls = sip_tls_context(settings)
        super().__init__(settings)
