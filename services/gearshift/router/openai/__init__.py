"""The OpenAI-compatible door: wire protocol, aiohttp handlers and their server."""
