"""Request/reply over topics: a responder answers requests from `py-rpc` (leased in queue mode),
a requester sends some and waits for each reply.

    python examples/rpc.py
"""

import asyncio

import quiver


async def main() -> None:
    async with await quiver.Client.connect() as client:
        try:
            await client.admin.create_topic("py-rpc", 1)
        except quiver.BrokerError as e:
            if e.code != quiver.ErrorCode.TOPIC_EXISTS:
                raise
        responder = quiver.Responder(client, "py-rpc-servers", "py-rpc", max_wait=0.2)
        server = asyncio.ensure_future(responder.serve(lambda request: request.value.upper()))
        requester = await quiver.Requester.create(client)  # a private reply topic
        try:
            for word in ["hello", "quiver", "rpc"]:
                reply = await requester.request("py-rpc", word.encode(), timeout=5.0)
                print(f"{word} -> {reply.value.decode()}")
        finally:
            server.cancel()
            await requester.close()
            await responder.close()


if __name__ == "__main__":
    asyncio.run(main())
