from __future__ import annotations

import pytest

import quiver
from conftest import BIN, run, start_broker


def test_token_and_mtls_connections_and_a_refusal_without_credentials(tmp_path) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(tmp_path, "--auth")
    try:
        admin_token = (broker.data_dir / "admin.token").read_text().strip()
        import subprocess

        subprocess.run(
            [str(BIN), "cert", "client", "alice", "--data-dir", str(broker.data_dir), "--out", str(tmp_path / "certs")],
            check=True, capture_output=True,
        )

        async def main() -> None:
            # No credentials: the Hello is refused with NotAuthorized, a non-retriable code.
            with pytest.raises(quiver.ConnectError) as e:
                await quiver.Client.connect(broker.addr, ca=broker.ca, token="")
            assert e.value.code == quiver.ErrorCode.NOT_AUTHORIZED, e.value
            assert e.value.retriable is False
            # A wrong token too.
            with pytest.raises(quiver.ConnectError) as e:
                await quiver.Client.connect(broker.addr, ca=broker.ca, token="qvt_0000000000000000_nope")
            assert e.value.code == quiver.ErrorCode.NOT_AUTHORIZED
            # The admin token works; a new user's token names that user.
            async with await quiver.Client.connect(broker.addr, ca=broker.ca, token=admin_token) as c:
                assert await c.admin.who_am_i() == ("admin", True)
                token = await c.admin.create_user("bob")
            async with await quiver.Client.connect(broker.addr, ca=broker.ca, token=token) as c:
                assert await c.admin.who_am_i() == ("bob", True)
                # bob has no ACL rule: refused with a code.
                with pytest.raises(quiver.BrokerError) as e2:
                    await c.admin.create_topic("bobs", 1)
                assert e2.value.code == quiver.ErrorCode.NOT_AUTHORIZED
            # mTLS: a client certificate from the dev CA names its principal.
            certs = tmp_path / "certs"
            async with await quiver.Client.connect(
                broker.addr, ca=broker.ca, cert=str(certs / "alice.pem"), key=str(certs / "alice.key")
            ) as c:
                assert await c.admin.who_am_i() == ("alice", True)

        run(main())
    finally:
        broker.stop()
