#!/usr/bin/env python3
"""A TCP proxy that delays every byte by a fixed time in each direction.

Stands in for a store (or service) on another machine when measuring what
round trips cost (BENCHMARKS.md, "The cache stage on a first load"):

    python3 bench/remote_store/delay_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS &
    bench_regimes d --scale 2 --store-pg postgres://postgres@127.0.0.1:LISTEN_PORT/postgres

Latency only: data is forwarded in order, each read released DELAY_MS after
it arrived, with no bandwidth limit. Listens on 127.0.0.1, forwards to
127.0.0.1:TARGET_PORT.
"""
import asyncio
import sys
import time


async def pipe(reader, writer, delay):
    queue = asyncio.Queue()

    async def release():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    releaser = asyncio.create_task(release())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            queue.put_nowait((time.monotonic() + delay, data))
    finally:
        queue.put_nowait((0, None))
        await releaser


async def main(listen_port, target_port, delay):
    async def handle(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(client_reader, server_writer, delay),
                             pipe(server_reader, client_writer, delay),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: delay_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS")
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000))
