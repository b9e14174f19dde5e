"""The bus: RabbitMQ connections and envelopes (amqp), every exchange and queue name (topology), the one
subscriber layer (bus), what a turn puts on the bus (dispatch), cancellations (cancellation) and the replay
log every answer is streamed through (replay)."""
