"""Drives the original Python MPREGClientAPI against an mpreg node that requires tokens and
serves TLS, as the original's users would: the token in the URL (`?token=`), or through its
`auth_token` option (sent as `Authorization: Bearer`), and the node's CA trusted through
SSL_CERT_FILE (Python's default SSL context reads it).

    SSL_CERT_FILE=ca.pem python scripts/original_token_client.py wss://127.0.0.1:PORT TOKEN

Run by `tests/auth_tls.rs::the_original_python_client_authenticates_by_query` (ignored by
default: it needs a Python with the original MPREG
package installed, named by MPREG_ORIGINAL_PYTHON).
Exits non-zero when a call with the token fails or a call without it succeeds.
"""

import asyncio
import sys

from mpreg.client.client_api import MPREGClientAPI


async def echo(url, **options):
    client = MPREGClientAPI(url, **options)
    await client.connect()
    try:
        return await client.call("echo", "through the original client", timeout=10)
    finally:
        await client.disconnect()


async def main(url, token):
    by_query = await echo(f"{url}/?token={token}")
    if by_query != "through the original client":
        sys.exit(f"token in the query: wrong answer {by_query!r}")
    by_header = await echo(url, auth_token=token)
    if by_header != "through the original client":
        sys.exit(f"auth_token: wrong answer {by_header!r}")
    try:
        answer = await echo(url)
    except BaseException as exc:  # the original raises its own connection errors
        print(f"without a token: refused ({type(exc).__name__}: {exc})")
    else:
        sys.exit(f"a call without a token was answered: {answer!r}")
    print("OK")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
