"""Our Dia-1.6B-0626 inference path: config, modules, weights, cache, delay pattern, sampling, decode loop.

Never imports discord, redis, config, bot or cogs (a test enforces it).
"""
