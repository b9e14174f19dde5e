"""What the tests share, in one place (no test module imports another):

- `sse`: the one SSE reader, built on the production decoder (it parses as a browser does);
- `polling`: `eventually()`, the one poller with a deadline;
- `fixtures`: fixtures of more than one folder (tests/conftest.py makes them known);
- `api`: requests and checks over the public HTTP API (stored messages, error bodies, fake
  provider calls, the response cache);
- `stacks`, `models`, `keys`: the services as processes, their model registries, the shared
  stack's API keys;
- `media`: real image and video bytes made on the fly;
- `history_stores`: the history stores under contract test;
- `browser`: what the browser tests share beyond the page object (keys, models, IndexedDB, axe);
- `containers`: the Docker SDK, imported quietly.
"""
