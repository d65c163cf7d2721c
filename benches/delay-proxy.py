#!/usr/bin/env python3
"""A TCP proxy that adds a fixed one-way delay in each direction (so RTT + 2 x DELAY).

This kernel has no netem; this stands in for a long link on loopback. Bytes are forwarded
in order, each chunk released DELAY after it arrived; there is no rate limit (shape the rate
with tc tbf when needed).

    python3 benches/delay-proxy.py --listen 127.0.0.1:7400 --to 127.0.0.1:7373 --delay-ms 25
"""
import argparse
import asyncio
import time


async def pump(reader, writer, delay):
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
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass

    task = asyncio.create_task(release())
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            queue.put_nowait((time.monotonic() + delay, data))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait((0, None))
    try:
        await task
    except (ConnectionError, OSError):
        pass


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", required=True, help="HOST:PORT to accept on")
    p.add_argument("--to", required=True, help="HOST:PORT to forward to")
    p.add_argument("--delay-ms", type=float, required=True, help="one-way delay per direction")
    a = p.parse_args()
    delay = a.delay_ms / 1000
    to_host, to_port = a.to.rsplit(":", 1)

    async def handle(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection(to_host, int(to_port))
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pump(client_r, server_w, delay), pump(server_r, client_w, delay))
        for w in (client_w, server_w):
            w.close()

    host, port = a.listen.rsplit(":", 1)
    server = await asyncio.start_server(handle, host, int(port))
    print(f"delay-proxy: {a.listen} -> {a.to}, {a.delay_ms} ms each way", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
