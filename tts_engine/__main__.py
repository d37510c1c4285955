"""`python -m tts_engine [worker]`: a GPU worker; `python -m tts_engine render TEXT -o FILE`: one line to a file."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from config.logs import configure_logging
from config.settings import SettingsError, WorkerSettings, load_settings
from config.startup import EXIT_CONFIG, EXIT_OK, EXIT_UNAVAILABLE, fail

log = logging.getLogger("tts_engine.worker")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tts_engine", description="Dia text-to-speech engine.")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="render jobs from Redis (the default)")
    worker.add_argument("--env-file", type=Path, help="settings file (default: .env when present)")
    worker.add_argument("--redis-url", help="overrides DIA_REDIS_URL")
    worker.add_argument("--model", help="hub id or local folder; overrides DIA_MODEL")
    worker.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps; overrides DIA_DEVICE")
    worker.add_argument("--dtype", help="auto, float32, bfloat16 or float16; overrides DIA_DTYPE")
    render = commands.add_parser("render", help="render one line to an .ogg or .wav file, without Discord")
    render.add_argument("--env-file", type=Path, help="settings file (default: .env when present)")
    render.add_argument("--model", help="hub id or local folder; overrides DIA_MODEL")
    render.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps; overrides DIA_DEVICE")
    render.add_argument("--dtype", help="auto, float32, bfloat16 or float16; overrides DIA_DTYPE")
    from tts_engine.render import add_arguments  # argparse only; the engine itself loads later

    add_arguments(render)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
        args.insert(0, "worker")
    options = _parser().parse_args(args)
    overrides: dict[str, Any] = {
        key: value
        for key in ("redis_url", "model", "device", "dtype")
        if (value := getattr(options, key, None)) is not None
    }
    try:
        settings = load_settings(WorkerSettings, options.env_file, **overrides)
        if options.command == "worker":
            settings.require_redis_url()
    except SettingsError as exc:
        return fail(exc, EXIT_CONFIG)
    configure_logging(settings.log_level)
    if settings.cpu_threads is not None:
        import torch

        torch.set_num_threads(settings.cpu_threads)
        log.info("torch's CPU threads: %d (DIA_CPU_THREADS)", torch.get_num_threads())
    if options.command == "render":
        from tts_engine import render

        return render.run(options, settings)

    return _serve(settings)


def _serve(settings: WorkerSettings) -> int:
    """Connect to Redis (fast failure first), load the engine, then render jobs until stopped."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    from tts_engine.jobs import redact_url

    url = settings.require_redis_url()

    def client() -> redis.Redis:
        # Short retries smooth over a blip; the worker's own loop rides out longer outages and still hears a
        # stop signal. BLOCK reads of 1 s need a longer socket timeout.
        return redis.Redis.from_url(
            url,
            socket_connect_timeout=5,
            socket_timeout=15,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 4),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )

    main, beat = client(), client()
    try:
        main.ping()
    except redis.RedisError as exc:
        return fail(f"cannot reach Redis at {redact_url(url)}: {exc}", EXIT_UNAVAILABLE)
    log.info("connected to Redis at %s; loading %s", redact_url(url), settings.model)

    from tts_engine.audio.opus import OpusSettings
    from tts_engine.engine import Engine
    from tts_engine.hub import ModelLoadError
    from tts_engine.renderer import EngineRenderer
    from tts_engine.shutdown import ColdShutdown, install_signals
    from tts_engine.worker import Worker, WorkerConfig

    try:
        engine = Engine.load(
            settings.model,
            settings.device,
            settings.dtype,
            codec=settings.codec,
            batch_invariant=settings.batch_invariant,
            dependent_launches=settings.dependent_launches,
        )
    except ModelLoadError as exc:
        return fail(exc, EXIT_UNAVAILABLE)
    # One slot on a CPU: it is compute-bound there, and batching only slows every line down.
    slots = settings.slots or (16 if engine.device.type == "cuda" else 1)
    config = WorkerConfig(
        reclaim_after=settings.reclaim_after,
        max_attempts=settings.max_attempts,
        cache_ttl=settings.cache_ttl,
        cache_max_bytes=settings.cache_max_mb * 2**20,
        slots=slots,
        guild_share=settings.guild_share,
    )
    report = {
        "model": settings.model,
        "device": str(engine.device),
        "dtype": str(engine.dtype).removeprefix("torch."),
        "revision": engine.revision,
    }
    opus = OpusSettings(settings.opus_bitrate, settings.opus_complexity, settings.opus_fec)
    renderer = EngineRenderer(engine, opus=opus, slots=slots)
    worker = Worker(main, beat, renderer, config, report)
    install_signals(worker)
    with contextlib.suppress(ColdShutdown):  # the abandoned job is reclaimed by another worker
        worker.run()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
