"""The data plane: an OpenAI-compatible ASGI gateway in front of the engines."""
