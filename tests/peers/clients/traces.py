"""Sends a fixed set of spans through one of the OpenTelemetry Python SDK's exporters:

    python traces.py zipkin-json   http://127.0.0.1:9411/api/v2/spans  SEED
    python traces.py zipkin-proto  http://127.0.0.1:9411/api/v2/spans  SEED
    python traces.py jaeger-thrift http://127.0.0.1:14268/api/traces   SEED   (jaeger venv)
    python traces.py jaeger-grpc   127.0.0.1:14250                     SEED   (jaeger venv)

The spans (ids from SEED, fixed times, attributes of every scalar type, an event, a link,
statuses ERROR and OK, kinds SERVER, CLIENT, INTERNAL, PRODUCER) are made with the SDK, kept by
an in-memory exporter, then handed to the exporter under test in one export call. Prints them
as JSON (what the SDK had; the tests derive what must arrive from it) and exits 1 if the
export did not succeed.
"""

import json
import random
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanKind, Status, StatusCode


class SeededIds(IdGenerator):
    def __init__(self, seed):
        self.random = random.Random(seed)

    def generate_span_id(self):
        return self.random.getrandbits(64)

    def generate_trace_id(self):
        return self.random.getrandbits(128)


def make_spans(seed):
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "checkout", "service.instance.id": "checkout-1",
                                  "deployment.environment": "test"}),
        id_generator=SeededIds(seed),
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("shop.checkout", "2.1.0")
    t0 = 1_700_000_000_000_000_000 + seed * 1_000_000_000
    root = tracer.start_span(
        "POST /checkout",
        kind=SpanKind.SERVER,
        start_time=t0,
        attributes={"http.method": "POST", "http.route": "/checkout", "retry": False,
                    "items": 3, "ratio": 0.25},
    )
    ctx = trace.set_span_in_context(root)
    other = trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=trace.TraceFlags(1),
    )
    charge = tracer.start_span(
        "charge card", context=ctx, kind=SpanKind.CLIENT, start_time=t0 + 1_000_000,
        attributes={"payment.provider": "acme"}, links=[Link(other, {"link.kind": "retry"})],
    )
    charge.add_event("retry", {"attempt": 2, "reason": "timeout"}, timestamp=t0 + 2_000_400)
    charge.set_status(Status(StatusCode.ERROR, "card declined"))
    charge.end(end_time=t0 + 5_500_600)
    render = tracer.start_span("render", context=ctx, kind=SpanKind.INTERNAL, start_time=t0 + 6_000_000)
    render.set_status(Status(StatusCode.OK))
    render.end(end_time=t0 + 7_000_000)
    publish = tracer.start_span("publish order", context=ctx, kind=SpanKind.PRODUCER,
                                start_time=t0 + 7_500_000, attributes={"queue": "orders"})
    publish.end(end_time=t0 + 8_000_000)
    root.end(end_time=t0 + 9_000_123)
    return memory.get_finished_spans()


def describe(span):
    def value(v):
        return list(v) if isinstance(v, tuple) else v

    return {
        "trace_id": format(span.context.trace_id, "032x"),
        "span_id": format(span.context.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else "",
        "name": span.name,
        "kind": span.kind.name,
        "start": span.start_time,
        "end": span.end_time,
        "attributes": {k: value(v) for k, v in span.attributes.items()},
        "events": [
            {"name": e.name, "time": e.timestamp, "attributes": dict(e.attributes)}
            for e in span.events
        ],
        "links": [
            {"trace_id": format(l.context.trace_id, "032x"),
             "span_id": format(l.context.span_id, "016x"),
             "attributes": dict(l.attributes)}
            for l in span.links
        ],
        "status": {"code": span.status.status_code.name,
                   "description": span.status.description or ""},
        "scope": {"name": span.instrumentation_scope.name,
                  "version": span.instrumentation_scope.version or ""},
        "resource": {k: value(v) for k, v in span.resource.attributes.items()},
    }


def exporter_for(kind, endpoint):
    if kind == "zipkin-json":
        from opentelemetry.exporter.zipkin.json import ZipkinExporter
        return ZipkinExporter(endpoint=endpoint)
    if kind == "zipkin-proto":
        from opentelemetry.exporter.zipkin.proto.http import ZipkinExporter
        return ZipkinExporter(endpoint=endpoint)
    if kind == "jaeger-thrift":
        from opentelemetry.exporter.jaeger.thrift import JaegerExporter
        return JaegerExporter(collector_endpoint=endpoint)
    if kind == "jaeger-grpc":
        from opentelemetry.exporter.jaeger.proto.grpc import JaegerExporter
        return JaegerExporter(collector_endpoint=endpoint, insecure=True)
    raise SystemExit(f"unknown exporter {kind}")


def main():
    kind, endpoint, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spans = make_spans(seed)
    exporter = exporter_for(kind, endpoint)
    result = exporter.export(spans)
    exporter.shutdown()
    print(json.dumps([describe(s) for s in spans]))
    if result != SpanExportResult.SUCCESS:
        print(f"export failed: {result}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
