"""SIP users in a real Redis, through the store and through `quietwire user`."""

from __future__ import annotations

import pytest
import redis.asyncio as redis
from quietwire.protocols.sip.digest import DigestAlgorithm, ha1
from quietwire.signaling.users import UserError, UserStore

from tests.conftest import quietwire_env, run_quietwire


async def test_put_get_list_delete(redis_url: str) -> None:
    client = redis.from_url(redis_url)
    store = UserStore(client, "example.org")
    try:
        assert await store.put("alice", "correct horse")
        assert not await store.put("alice", "battery staple")
        assert await store.put("bob", "bob-password")
        user = await store.get("alice")
        assert user is not None
        assert user.ha1[DigestAlgorithm.MD5] == ha1(
            DigestAlgorithm.MD5, "alice", "example.org", "battery staple"
        )
        assert user.ha1[DigestAlgorithm.SHA_256] == ha1(
            DigestAlgorithm.SHA_256, "alice", "example.org", "battery staple"
        )
        assert await store.usernames() == ["alice", "bob"]
        assert await store.delete("alice")
        assert not await store.delete("alice")
        assert await store.get("alice") is None
        assert await store.usernames() == ["bob"]
    finally:
        await client.aclose()


async def test_password_never_stored(redis_url: str) -> None:
    client = redis.from_url(redis_url)
    try:
        await UserStore(client, "example.org").put("carol", "plain-text-secret")
        dump = b""
        async for key in client.scan_iter():
            read = client.hgetall if await client.type(key) == b"hash" else client.smembers
            dump += key + repr(await read(key)).encode()
        assert b"carol" in dump
        assert b"plain-text-secret" not in dump
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [("bad name", "long enough", "invalid username"), ("dave", "short", "too short")],
)
async def test_refused(redis_url: str, username: str, password: str, reason: str) -> None:
    client = redis.from_url(redis_url)
    try:
        with pytest.raises(UserError, match=reason):
            await UserStore(client, "example.org").put(username, password)
        assert await UserStore(client, "example.org").usernames() == []
    finally:
        await client.aclose()


def test_cli_add_list_del(redis_url: str) -> None:
    env = quietwire_env(QW_REDIS_URL=redis_url, QW_SIP_DOMAIN="example.org")
    added = run_quietwire("user", "add", "erin", "--password-stdin", env=env, stdin="erin-secret\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added erin@example.org"
    listed = run_quietwire("user", "list", env=env)
    assert listed.stdout.split() == ["erin@example.org"]
    assert run_quietwire("user", "del", "erin", env=env).returncode == 0
    missing = run_quietwire("user", "del", "erin", env=env)
    assert missing.returncode == 1
    assert "no such user" in missing.stderr


def test_cli_without_password_says_how(redis_url: str) -> None:
    env = quietwire_env(QW_REDIS_URL=redis_url)
    result = run_quietwire("user", "add", "frank", env=env)
    assert result.returncode == 1
    assert "--password-stdin" in result.stderr


def test_cli_redis_down_is_clear() -> None:
    from tests.conftest import free_port

    env = quietwire_env(QW_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    result = run_quietwire("user", "list", env=env)
    assert result.returncode == 1
    assert "cannot use Redis at QW_REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_keeps_no_md5_hash_when_md5_is_off(redis_url: str) -> None:
    """Issue 12 finding 5: with QW_SIP_DIGEST_ALGORITHMS=SHA-256 no MD5 HA1 is stored, and
    setting the password again drops one stored before."""
    import redis as redis_sync

    key = "qw:{users:example.org}:user:gina"
    both = quietwire_env(QW_REDIS_URL=redis_url, QW_SIP_DOMAIN="example.org")
    add = ("user", "add", "gina", "--password-stdin")
    added = run_quietwire(*add, env=both, stdin="gina-secret\n")
    assert added.returncode == 0, added.stderr
    client = redis_sync.Redis.from_url(redis_url)
    assert set(client.hkeys(key)) == {b"ha1_md5", b"ha1_sha256", b"created"}
    only = {**both, "QW_SIP_DIGEST_ALGORITHMS": "SHA-256"}
    again = run_quietwire(*add, env=only, stdin="gina-secret\n")
    assert again.returncode == 0, again.stderr
    assert set(client.hkeys(key)) == {b"ha1_sha256", b"created"}
    client.close()
