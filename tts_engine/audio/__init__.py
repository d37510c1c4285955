"""Audio path: DAC codec, streaming decode, resampling, speed, loudness and Opus frames.

Never imports discord, redis, config, bot or cogs (a test enforces it).
"""
