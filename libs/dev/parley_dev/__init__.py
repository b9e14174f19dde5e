"""Development tooling: bring up the servers Parley needs and run the services as processes.

Used by `make run`, the integration tests and the benchmarks; never by the services.
"""
