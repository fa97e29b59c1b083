"""Sends records with PyPI's fluent-logger (Message mode; it has no acknowledgements):

    python fluent_message.py PORT TAG N

Prints the records it sent as JSON ([{time_ns, record}]); exits 1 if an emit failed.
"""

import json
import sys

from fluent import sender


def main():
    port, tag, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    s = sender.FluentSender(tag, host="127.0.0.1", port=port, nanosecond_precision=True, timeout=10)
    sent = []
    for i in range(n):
        seconds, nanos = 1_700_000_100 + i, 5
        record = {"message": f"py line {i}", "seq": i, "flag": True}
        if not s.emit_with_time(None, sender.EventTime(seconds, nanos), record):
            print(f"emit {i} failed: {s.last_error}", file=sys.stderr)
            sys.exit(1)
        sent.append({"time_ns": str(seconds * 1_000_000_000 + nanos), "record": record})
    s.close()
    print(json.dumps(sent))


if __name__ == "__main__":
    main()
