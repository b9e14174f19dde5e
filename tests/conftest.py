"""Settings for every test directory.

Property tests (hypothesis) explore the same examples on every run, so a `make test` — and CI —
judges the code, not the luck of the draw; `HYPOTHESIS_PROFILE=explore` draws new examples (run
it when changing a parser, the SSE writer or the trimming), and a failure it finds becomes a
fixed example in its test.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
