"""What every Parley service shares, by what it holds:

- `settings`, `errors`, `models`: configuration, typed errors and the model registry, used everywhere;
- `messaging`: RabbitMQ, the bus topology, the subscriber layer, dispatch of a turn, the replay log;
- `budgets`: provider and per-user limits and stream slots, kept in Redis;
- `context`: the prompt, token counts, fitting the window, choosing the model;
- `clients`: gRPC calls, the history and media clients, Redis pools;
- `observability`: logs, metrics, traces;
- `service`: running a process, the gRPC server, the operations port.
"""
