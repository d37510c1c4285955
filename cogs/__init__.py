"""Slash-command surface only. Each module ends with `async def setup(bot)` and is loaded by name."""
