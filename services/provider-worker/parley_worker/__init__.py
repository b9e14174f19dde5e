"""Provider worker: streams answers from a model provider back to the client's reply queue."""
