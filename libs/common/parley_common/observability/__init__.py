"""What a service tells its operators: JSON logs (logs), Prometheus metrics (metrics) and OpenTelemetry
traces (telemetry)."""
