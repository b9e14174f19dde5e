"""Without an OTLP endpoint no span is recorded, yet log lines and messages keep their trace ids."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, logging, sys
    from parley_common.observability.logs import setup_logging
    from parley_common.observability.telemetry import inject_headers, setup_telemetry, tracer

    setup_telemetry("unit", "")
    setup_logging("unit", "INFO")
    with tracer("unit").start_as_current_span("turn") as span:
        logging.getLogger("unit").info("inside")
        print(json.dumps({"recording": span.is_recording(),
                          "trace_id": format(span.get_span_context().trace_id, "032x"),
                          "headers": inject_headers({})}), file=sys.stderr)
    """
)


def test_spans_are_not_recorded_but_ids_reach_logs_and_messages() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True)
    lines = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line.startswith("{")]
    result = next(line for line in lines if "recording" in line)
    logged = next(line for line in lines if line.get("msg") == "inside")
    assert result["recording"] is False
    assert logged["trace_id"] == result["trace_id"] != "0" * 32
    assert result["headers"]["traceparent"].split("-")[1] == result["trace_id"]
