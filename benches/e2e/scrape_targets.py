#!/usr/bin/env python3
"""Static Prometheus targets for benches/e2e/scrape.sh: one process listening on TARGETS
consecutive ports from PORT, every one serving the same pre-generated text exposition (format
0.0.4) of SERIES series on /metrics: counters, gauges and one histogram family, with labels.

    scrape_targets.py PORT TARGETS SERIES
"""
import asyncio
import sys


def exposition(series: int) -> bytes:
    lines = []
    per_family = 50
    families = max(1, series // per_family)
    n = 0
    for f in range(families):
        kind = "counter" if f % 2 == 0 else "gauge"
        name = f"bench_metric_{f}" + ("_total" if kind == "counter" else "")
        lines.append(f"# HELP {name} Synthetic {kind} {f}.")
        lines.append(f"# TYPE {name} {kind}")
        for i in range(per_family):
            if n >= series:
                break
            lines.append(f'{name}{{shard="{i % 7}",path="/api/v1/item/{i}",method="GET"}} {i * 3 + f}')
            n += 1
    return ("\n".join(lines) + "\n").encode()


async def main() -> None:
    port, targets, series = (int(a) for a in sys.argv[1:4])
    body = exposition(series)
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    response = head + body

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                if not request:
                    break
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    servers = [await asyncio.start_server(serve, "127.0.0.1", port + i, backlog=64) for i in range(targets)]
    print(f"serving {targets} targets x {series} series ({len(body)} bytes) on 127.0.0.1:{port}..{port + targets - 1}", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main())
