#!/usr/bin/env python3
"""The checks of `stack.sh check`, after shardtel-loadgen --verify --sampled passed on the
kept-trace files: every kept trace is complete in Jaeger (the same span ids, every parent
inside the trace), Prometheus scraped both shardtels' self-metrics, VictoriaMetrics holds
metrics and VictoriaLogs holds logs that came through the processing tier.

    check.py KEPT_DIR

Exit status 0 when everything holds; 1 otherwise (each failure is printed).
"""

import glob
import json
import sys
import time
import urllib.parse
import urllib.request

JAEGER = "http://127.0.0.1:16686"
PROMETHEUS = "http://127.0.0.1:9090"
VICTORIAMETRICS = "http://127.0.0.1:8428"
VICTORIALOGS = "http://127.0.0.1:9428"


def get(url, **params):
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()
    except OSError:
        return None


def kept_traces(kept_dir):
    """trace id (hex) -> {span id (hex): parent span id (hex or "")} from the file exporter's
    OTLP/JSON lines."""
    traces = {}
    for path in sorted(glob.glob(f"{kept_dir}/traces*.jsonl*")):
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                for rs in json.loads(line).get("resourceSpans", []):
                    for ss in rs.get("scopeSpans", []):
                        for span in ss.get("spans", []):
                            spans = traces.setdefault(span["traceId"].lower(), {})
                            spans[span["spanId"].lower()] = span.get("parentSpanId", "").lower()
    return traces


def jaeger_spans(trace_id):
    """span id -> parent span id (CHILD_OF reference) as Jaeger's query API returns them."""
    body = get(f"{JAEGER}/api/traces/{trace_id}")
    if body is None:
        return None
    data = json.loads(body).get("data") or []
    if len(data) != 1:
        return None
    spans = {}
    for span in data[0]["spans"]:
        parents = [r["spanID"] for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
        spans[span["spanID"].lower()] = parents[0].lower() if parents else ""
    return spans


def check_jaeger(kept_dir):
    """Every kept trace in Jaeger with exactly the kept spans and parents, within 60 s. The
    files are read again each round, so a span exported late is in both or in neither."""
    deadline = time.time() + 60
    confirmed = {}
    while True:
        traces = kept_traces(kept_dir)
        missing = {t: s for t, s in traces.items() if confirmed.get(t) != s}
        for trace_id, spans in list(missing.items()):
            if jaeger_spans(trace_id) == spans:
                confirmed[trace_id] = spans
                del missing[trace_id]
        if not missing or time.time() > deadline:
            break
        time.sleep(1)
    for trace_id, spans in list(missing.items())[:5]:
        got = jaeger_spans(trace_id)
        differing = "" if got is None else f", differing in {sorted(set(spans.items()) ^ set(got.items()))[:4]}"
        print(f"  trace {trace_id}: kept {len(spans)} spans, Jaeger has "
              f"{'none' if got is None else len(got)}{differing}")
    complete = len(traces) - len(missing)
    roots_ok = all(sum(1 for p in s.values() if p == "") == 1 and all(p == "" or p in s for p in s.values())
                   for s in traces.values())
    print(f"jaeger        kept traces {len(traces)}  complete in Jaeger {complete}  "
          f"missing or incomplete {len(missing)}  (one root, parents inside: {roots_ok})")
    return not missing and roots_ok and len(traces) > 0


def prometheus_value(query):
    body = get(f"{PROMETHEUS}/api/v1/query", query=query)
    if body is None:
        return None
    result = json.loads(body)["data"]["result"]
    return float(result[0]["value"][1]) if len(result) == 1 else None


def check_prometheus():
    """Both shardtels scraped (up == 1) and their spans counters in Prometheus, within 30 s."""
    queries = {
        "gateway up": 'up{job="shardtel-gateway"}',
        "processor up": 'up{job="shardtel-processor"}',
        "gateway spans to kafka": 'sum(shardtel_exporter_sent_spans_total{job="shardtel-gateway",exporter="kafka"})',
        "processor spans to jaeger": 'sum(shardtel_exporter_sent_spans_total{job="shardtel-processor",exporter="jaeger"})',
    }
    deadline = time.time() + 30
    values = {}
    while time.time() < deadline:
        values = {name: prometheus_value(q) for name, q in queries.items()}
        if all(v is not None and v > 0 for v in values.values()):
            break
        time.sleep(1)
    print("prometheus    " + "  ".join(f"{name} {v if v is None else int(v)}" for name, v in values.items()))
    return all(v is not None and v > 0 for v in values.values())


def check_victoria():
    """Some metric series in VictoriaMetrics and some log entries in VictoriaLogs."""
    series = logs = 0
    deadline = time.time() + 30
    while time.time() < deadline:
        body = get(f"{VICTORIAMETRICS}/api/v1/query", query='count({__name__=~".+"})')
        result = json.loads(body)["data"]["result"] if body else []
        series = float(result[0]["value"][1]) if result else 0
        body = get(f"{VICTORIALOGS}/select/logsql/query", query="* | stats count() as n")
        logs = int(json.loads(body.splitlines()[0])["n"]) if body and body.strip() else 0
        if series > 0 and logs > 0:
            break
        time.sleep(1)
    print(f"victoria      metric series in VictoriaMetrics {int(series)}  log entries in VictoriaLogs {logs}")
    return series > 0 and logs > 0


def main():
    results = [check_jaeger(sys.argv[1]), check_prometheus(), check_victoria()]
    print("stack check   " + ("PASS" if all(results) else "FAIL"))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
