"""What every Parley service shares: settings, logs, telemetry, AMQP topology, errors, replay log."""
