"""Chat turns at the edge, one module per concept:

- `start.py`: starting a turn (check, claim, budget and stream slot, publish); `Turns`.
- `ownership.py`: whether a conversation is the user's, remembered for a while.
- `responses.py`: attaching to a response already started (resume, a repeat) and cancelling it.
- `live.py`: the streams this gateway serves; frames from its reply queue to their feeds.
- `replay_follow.py`: a feed filled from a response's replay log.
- `feed.py`: what flows to a relay and what it gives out.
- `relay.py`: a feed's frames as the client gets them (coalescing, heartbeats, idle timeout,
  final events); a pure async generator.
- `stream.py`: `TurnStream`, what a route returns; its connection's stream slot is given back
  before the last frame (`connection_slot.py`).
"""
