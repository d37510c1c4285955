"""The GPU side: the Dia engine (`dia/`), the audio path (`audio/`), the Redis contract and the worker.

Kept free of imports so that the torch-free modules (`jobs`, `script`) can be imported by the bot without
loading torch.
"""
