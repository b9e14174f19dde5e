"""Gateway: the HTTP edge. Authenticates users, turns requests into commands, streams answers as SSE."""
