"""`make run`: Redis (embedded when DIA_REDIS_URL is unset), one worker and the bot, supervised together."""
