"""History service: the system of record for conversations and messages."""
