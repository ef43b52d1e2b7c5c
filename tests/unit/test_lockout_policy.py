"""The failed-authentication lockout's policy: sources as counted, and the rule that
one address cannot lock a user out (checked at start)."""

from __future__ import annotations

import pytest
from quietwire.runtime.settings import SettingsError, load_settings
from quietwire.signaling.lockout import LockoutPolicy, check_policy, one_source_most, source_key
from quietwire.signaling.settings import SignalingSettings, UserAdminSettings


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:2::/64"),
        ("[2001:db8:1:3::1]", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
    ],
)
def test_sources_counted_by_address_or_ipv6_64(address: str, key: str) -> None:
    assert source_key(address) == key


def test_the_defaults_hold_the_rule() -> None:
    policy = LockoutPolicy()
    check_policy(policy)
    assert one_source_most(policy) == 70 < policy.user_failures


def test_a_per_user_limit_one_address_could_reach_is_refused() -> None:
    with pytest.raises(ValueError, match="one address could lock"):
        check_policy(LockoutPolicy(source_failures=10, source_window=60, user_failures=100))


def test_settings_refuse_it_at_start() -> None:
    base = {"sip_tls_cert": __file__, "sip_tls_key": __file__, "grpc_insecure": True}
    with pytest.raises(SettingsError, match="QW_SIP_USER_MAX_AUTH_FAILURES"):
        load_settings(SignalingSettings, **base, sip_user_max_auth_failures=20)
    settings = load_settings(
        SignalingSettings, **base, sip_max_auth_failures=3, sip_user_max_auth_failures=22
    )
    assert settings.lockout_policy.source_failures == 3
    assert settings.lockout_policy.user_failures == 22


def test_the_per_user_limit_follows_the_per_source_one_by_default() -> None:
    base = {"sip_tls_cert": __file__, "sip_tls_key": __file__, "grpc_insecure": True}
    assert load_settings(SignalingSettings, **base).lockout_policy == LockoutPolicy()
    raised = load_settings(SignalingSettings, **base, sip_max_auth_failures=50)
    assert raised.lockout_policy.user_failures == 2 * 50 * 7


def test_digest_algorithms_shared_with_the_user_command() -> None:
    assert [a.value for a in load_settings(UserAdminSettings).digest_algorithms] == [
        "SHA-256",
        "MD5",
    ]
    only = load_settings(UserAdminSettings, sip_digest_algorithms="sha-256")
    assert [a.value for a in only.digest_algorithms] == ["SHA-256"]
    with pytest.raises(SettingsError, match="QW_SIP_DIGEST_ALGORITHMS"):
        load_settings(UserAdminSettings, sip_digest_algorithms="MD5,MD5")
