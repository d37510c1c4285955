"""The Discord process: client, queue client, voice player, stores, text cleaning, errors. Never loads torch."""
