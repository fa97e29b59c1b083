"""Pre-encoded Zipkin JSON and Jaeger gRPC payloads, and a driver that replays them
(benches/e2e/receivers.sh):

    python receivers_driver.py encode zipkin-json FILE SPANS     (tests/peers/clients otel venv)
    python receivers_driver.py encode jaeger-grpc FILE SPANS     (jaeger venv)
    python receivers_driver.py send zipkin-json URL FILE SECONDS CONNECTIONS
    python receivers_driver.py send jaeger-grpc HOST:PORT FILE SECONDS CONNECTIONS  (jaeger venv)

`encode` makes SPANS spans with the OpenTelemetry Python SDK (a few attributes, an event on
every fourth span, 8 spans per trace) and writes one request body with the SDK's own encoder:
the Zipkin JSON v2 exporter's, or the Jaeger gRPC exporter's PostSpansRequest. `send` posts
that one body again and again for SECONDS over CONNECTIONS keep-alive connections (threads
with http.client; one grpcio channel with CONNECTIONS calls in flight) and prints
`requests=N ok=M` (M answered with success). The body is encoded once: the driver's cost per
request is a write, not an encode.
"""

import sys
import threading
import time


def make_spans(n):
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench",
                                                       "host.name": "bench-host"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench", "1.0")
    t0 = time.time_ns()
    root = None
    for i in range(n):
        if i % 8 == 0:
            root = tracer.start_span("GET /api/orders", kind=trace.SpanKind.SERVER,
                                     start_time=t0 + i * 1000,
                                     attributes={"http.method": "GET", "http.status_code": 200})
            span = root
        else:
            ctx = trace.set_span_in_context(root)
            span = tracer.start_span(f"query {i % 8}", context=ctx, kind=trace.SpanKind.CLIENT,
                                     start_time=t0 + i * 1000,
                                     attributes={"db.system": "postgresql", "db.rows": i,
                                                 "db.statement": "SELECT * FROM orders WHERE id = $1"})
        if i % 4 == 0:
            span.add_event("cache miss", {"key": f"order:{i}"}, timestamp=t0 + i * 1000 + 10)
        span.end(end_time=t0 + i * 1000 + 500_000)
    return memory.get_finished_spans()


def encode(kind, path, n):
    spans = make_spans(n)
    if kind == "zipkin-json":
        from opentelemetry.exporter.zipkin.json.v2 import JsonV2Encoder
        from opentelemetry.exporter.zipkin.node_endpoint import NodeEndpoint
        endpoint = NodeEndpoint()
        endpoint.service_name = "bench"  # as the exporter sets it from the resource
        body = JsonV2Encoder().serialize(spans, endpoint).encode()
    elif kind == "jaeger-grpc":
        from opentelemetry.exporter.jaeger.proto.grpc.gen import collector_pb2, model_pb2
        from opentelemetry.exporter.jaeger.proto.grpc.translate import (
            ProtobufTranslator, Translate)
        # As the exporter's export() builds it (each span carries its process).
        translated = Translate(spans)._translate(ProtobufTranslator("bench"))
        batch = model_pb2.Batch(spans=translated)
        body = collector_pb2.PostSpansRequest(batch=batch).SerializeToString()
    else:
        raise SystemExit(f"unknown kind {kind}")
    with open(path, "wb") as f:
        f.write(body)
    print(f"{kind}: {n} spans, {len(body)} bytes")


def send_zipkin(url, body, seconds, connections):
    import http.client
    import urllib.parse

    parsed = urllib.parse.urlparse(url)
    deadline = time.monotonic() + seconds
    counts = [[0, 0] for _ in range(connections)]

    def run(slot):
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        headers = {"Content-Type": "application/json"}
        while time.monotonic() < deadline:
            try:
                conn.request("POST", parsed.path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                counts[slot][0] += 1
                if 200 <= resp.status < 300:
                    counts[slot][1] += 1
            except (OSError, http.client.HTTPException):
                counts[slot][0] += 1
                conn.close()
                conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        conn.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def send_jaeger(target, body, seconds, in_flight):
    import grpc

    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
    call = channel.unary_unary("/jaeger.api_v2.CollectorService/PostSpans",
                               request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    counts = [0, 0]
    slots = threading.Semaphore(in_flight)

    def done(future):
        with lock:
            counts[0] += 1
            if future.exception() is None:
                counts[1] += 1
        slots.release()

    while time.monotonic() < deadline:
        slots.acquire()
        call.future(body, timeout=30).add_done_callback(done)
    for _ in range(in_flight):
        slots.acquire()
    channel.close()
    return counts[0], counts[1]


def main():
    if sys.argv[1] == "encode":
        encode(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    kind, target, path = sys.argv[2], sys.argv[3], sys.argv[4]
    seconds, connections = float(sys.argv[5]), int(sys.argv[6])
    with open(path, "rb") as f:
        body = f.read()
    if kind == "zipkin-json":
        sent, ok = send_zipkin(target, body, seconds, connections)
    elif kind == "jaeger-grpc":
        sent, ok = send_jaeger(target, body, seconds, connections)
    else:
        raise SystemExit(f"unknown kind {kind}")
    print(f"requests={sent} ok={ok}")


if __name__ == "__main__":
    main()
