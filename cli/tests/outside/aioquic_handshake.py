"""A QUIC client that is not quinn/rustls, for cli/tests/outside_quic.rs.

Parses every certificate given with `cryptography` (strict DER: its `.extensions` raise on a
non-DER encoding such as an explicit BasicConstraints `cA: FALSE`), then opens a QUIC connection
with aioquic to the broker, trusting only the given CA and offering ALPN `quiver/1`, and pings it.
Prints one line per step; exits 0 only when every step succeeded, 1 with the reason otherwise.
"""

import argparse
import asyncio
import sys

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509


def strict_parse(path):
    with open(path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    names = [ext.oid.dotted_string for ext in cert.extensions]
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    print(f"parsed {path}: ca={basic.value.ca} critical={basic.critical} extensions={names}")


async def handshake(host, port, ca, server_name):
    config = QuicConfiguration(is_client=True, alpn_protocols=["quiver/1"])
    config.load_verify_locations(cafile=ca)
    config.server_name = server_name
    async with connect(host, port, configuration=config, wait_connected=True) as client:
        alpn = client._quic.tls.alpn_negotiated
        await asyncio.wait_for(client.ping(), timeout=5)
        print(f"handshake ok: alpn {alpn}")
        if alpn != "quiver/1":
            raise RuntimeError(f"negotiated ALPN {alpn!r}, not 'quiver/1'")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True, help="the only CA to trust")
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--parse", nargs="*", default=[], help="certificates to parse strictly")
    args = p.parse_args()
    try:
        for path in args.parse:
            strict_parse(path)
        asyncio.run(asyncio.wait_for(handshake(args.host, args.port, args.ca, args.server_name), 10))
    except Exception as e:  # the test reads the reason from stdout
        print(f"failed: {type(e).__name__}: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
