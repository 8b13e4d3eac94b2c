"""Holds N idle keep-alive connections open to a proxy on 127.0.0.1.

Opens the connections (a bounded number of connects at a time), sends one
GET on each and reads its whole response, then prints
`READY opened=N failed=F` and keeps them all open and idle. On SIGTERM, or
after --hold seconds, it prints `DONE closed_by_peer=C` (connections the
proxy closed while they were held) and exits.

    python3 idle_client.py --port 8080 --conns 10000
"""
import argparse
import asyncio
import signal
import sys

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: idle-client\r\n\r\n"


async def read_response(reader):
    """Reads one response with a Content-Length or chunked body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


class Holder:
    def __init__(self):
        self.writers = []
        self.failed = 0
        self.closed_by_peer = 0

    async def open_one(self, port, gate, timeout):
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), timeout)
                writer.write(REQUEST)
                status = await asyncio.wait_for(read_response(reader), timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, ValueError, IndexError):
                self.failed += 1
                return
        if status != b"200":
            self.failed += 1
            writer.close()
            return
        self.writers.append(writer)
        asyncio.ensure_future(self.watch(reader))

    async def watch(self, reader):
        """Counts the connection when the proxy closes it."""
        try:
            await reader.read(1)
        except OSError:
            pass
        self.closed_by_peer += 1


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--conns", type=int, default=10000)
    parser.add_argument("--parallel", type=int, default=100,
                        help="connects in progress at once")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds for one connect plus its response")
    parser.add_argument("--hold", type=float, default=60.0,
                        help="seconds to hold the connections at most")
    args = parser.parse_args()

    holder = Holder()
    gate = asyncio.Semaphore(args.parallel)
    await asyncio.gather(*(holder.open_one(args.port, gate, args.timeout)
                           for _ in range(args.conns)))
    print(f"READY opened={len(holder.writers)} failed={holder.failed}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.hold)
    except asyncio.TimeoutError:
        pass
    print(f"DONE closed_by_peer={holder.closed_by_peer}", flush=True)
    for writer in holder.writers:
        writer.transport.abort()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
