"""exai: AI workflow tools over MCP on WebSocket, built on Trio structured concurrency."""

__version__ = "0.1.0"
