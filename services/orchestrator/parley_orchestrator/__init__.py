"""Orchestrator: turns a chat request into a provider job (persist, load history, build prompt, route)."""
