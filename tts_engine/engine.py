"""The engine the worker uses: load Dia once, then turn text into DAC codes or Discord-ready audio, streamed.

    engine = Engine.load("nari-labs/Dia-1.6B-0626", codec="descript/dac_44khz")   # or local folders
    codes_Tx9 = engine.generate_codes("[S1] Hello! (laughs)")    # int64 (T, 9), undelayed
    for frames_nx9 in engine.stream_codes(text): ...              # each frame as soon as it is final
    for packets in engine.stream_audio(text): ...                 # 20 ms Opus packets, as early as possible
    scheduler = engine.scheduler(slots=16)                        # many requests per step (tts_engine/batching)

Semantics are transformers' DiaForConditionalGeneration.generate for the 0626 checkpoint (see tts_engine/dia).
Not thread-safe: one thread owns an engine (and its GPU), and one request runs at a time through the stream
methods; a scheduler made by `Engine.scheduler` runs many at once on the same weights.
"""

from __future__ import annotations

import importlib.util
import logging
import secrets
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from tts_engine import hub
from tts_engine.audio.clip import ClipLimits, decode_clip
from tts_engine.audio.codec import Codec
from tts_engine.audio.opus import OpusSettings
from tts_engine.audio.pipeline import AudioPipeline, Chunk
from tts_engine.audio.stream import warm_up
from tts_engine.batching import Scheduler
from tts_engine.dia import text as dia_text
from tts_engine.dia import weights
from tts_engine.dia.config import DiaConfig
from tts_engine.dia.decode import Decoder, Request
from tts_engine.dia.delay import undelay
from tts_engine.dia.ending import NOT_ENDED
from tts_engine.dia.model import DiaModel
from tts_engine.params import MAX_SEED, GenerationParams, VoicePrompt, resumed_frames

__all__ = ["AUDIO_THREADS", "Engine", "EngineBusy", "GenerationParams", "VoicePrompt"]  # the engine's public API

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class EngineBusy(RuntimeError):
    """A second request started while a stream was still open on this engine."""


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in choices:
        raise ValueError(f"dtype must be one of {', '.join(choices)}, got {dtype!r}")
    return choices[dtype]


AUDIO_THREADS = 4  # default audio pool on CUDA: Opus for 16 streams at 4x real time is about one core


def _triton_ready(device: torch.device) -> bool:
    """Whether the decode kernels can run here: a CUDA device and Triton (which CUDA builds of torch bring)."""
    if device.type != "cuda":
        return False
    if importlib.util.find_spec("triton") is None:
        log.warning("triton is not installed: decode steps use SDPA attention, which is slower on CUDA")
        return False
    return True


class Engine:
    """Dia on one device. Build it with `Engine.load`."""

    def __init__(
        self,
        model: DiaModel,
        *,
        codec: Codec | None = None,
        chunk_steps: int = 8,
        use_cuda_graphs: bool | None = None,
        compile_ops: bool | None = None,
        decode_kernels: bool | None = None,
        dependent_launches: bool = True,
        persistent_layers: bool = False,
        audio_threads: int | None = None,
        batch_invariant: bool = False,
        revision: str = "unversioned",
    ) -> None:
        self.model = model
        self.codec = codec
        self.revision = revision  # identifies the weights (and codec) for render caches
        self.config: DiaConfig = model.cfg
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        if self.device.type == "cuda":
            # The tuners' timing streams, graph capture and replay run on the thread's current device: make it the
            # model's, or DIA_DEVICE=cuda:1 would capture on GPU 0 with tensors on GPU 1. The thread that builds
            # the engine is the one that runs it (the worker's main thread).
            torch.cuda.set_device(self.device)
        self.chunk_steps = chunk_steps
        graphs = self.device.type == "cuda" if use_cuda_graphs is None else use_cuda_graphs
        # Fused elementwise kernels (tts_engine/dia/fused.py): on CUDA by default, where kernel count sets the pace.
        if self.device.type == "cuda" if compile_ops is None else compile_ops:
            model.use_compiled_ops()
        # Split-KV attention and fused cache writes for decode steps (tts_engine/dia/kernels.py): CUDA with Triton.
        kernels = _triton_ready(self.device) if decode_kernels is None else decode_kernels
        if batch_invariant:
            # A seeded line renders the same bits whatever shares its steps (DiaModel.use_batch_invariant), with
            # the decode kernels in their invariant form where they would run.
            model.use_batch_invariant(kernels=kernels)
        elif kernels:
            model.use_decode_kernels(dependent_launches=dependent_launches, persistent_layers=persistent_layers)
        # Audio after the codec (resampling, loudness, Opus) runs on this pool, beside the GPU thread: by
        # default on CUDA, where those stages would otherwise take most of a stream's time (bench/audio.py).
        threads = (AUDIO_THREADS if self.device.type == "cuda" else 0) if audio_threads is None else audio_threads
        if threads < 0:
            raise ValueError(f"audio_threads must be 0 or more, got {threads}")
        self._audio_pool = ThreadPoolExecutor(threads, thread_name_prefix="audio") if threads else None
        noise_steps = max(chunk_steps, 1 + self.config.max_delay)
        self._decoder = Decoder(model, slots=1, noise_steps=noise_steps, use_graphs=graphs)
        self._busy = threading.Lock()

    @classmethod
    def load(
        cls,
        model: str | Path,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        *,
        codec: str | Path | None = None,
        chunk_steps: int = 8,
        use_cuda_graphs: bool | None = None,
        compile_ops: bool | None = None,
        decode_kernels: bool | None = None,
        dependent_launches: bool = True,
        persistent_layers: bool = False,
        audio_threads: int | None = None,
        batch_invariant: bool = False,
    ) -> Engine:
        """Load a checkpoint (local folder or hub id); defaults: CUDA + bfloat16 when present, else CPU + float32.

        `codec` (folder or hub id, e.g. descript/dac_44khz) is needed for audio; codes work without it.
        Raises `hub.ModelLoadError` (one line naming the folder, id or tensor) when something cannot load.
        """
        target = _pick_device(device)
        precision = _pick_dtype(dtype, target)
        folder = weights.resolve(str(model))
        log.info("loading Dia from %s onto %s as %s", folder, target, str(precision).removeprefix("torch."))
        loaded = weights.load(folder, device=target, dtype=precision)
        revision = f"dia-{hub.revision(folder)}"
        dac = None
        if codec is not None:
            codec_folder = Codec.resolve(codec)
            dac = Codec.load(codec_folder, target)
            warm_up(dac)
            revision += f":dac-{hub.revision(codec_folder)}"
        return cls(
            loaded,
            codec=dac,
            chunk_steps=chunk_steps,
            use_cuda_graphs=use_cuda_graphs,
            compile_ops=compile_ops,
            decode_kernels=decode_kernels,
            dependent_launches=dependent_launches,
            persistent_layers=persistent_layers,
            audio_threads=audio_threads,
            batch_invariant=batch_invariant,
            revision=revision,
        )

    def generate_codes(
        self, text: str, params: GenerationParams | None = None, prompt: VoicePrompt | None = None
    ) -> np.ndarray:
        """DAC codes int64 (T, 9) of `text`: undelayed, without the prompt's frames, EOS and PAD removed."""
        chunks = list(self.stream_codes(text, params, prompt))
        if not chunks:
            return np.zeros((0, self.config.decoder.num_channels), dtype=np.int64)
        return np.concatenate(chunks)

    def stream_codes(
        self,
        text: str,
        params: GenerationParams | None = None,
        prompt: VoicePrompt | None = None,
        *,
        resume_from: np.ndarray | None = None,
    ) -> Generator[np.ndarray, None, None]:
        """Frames int64 (n, 9) as soon as each is final (15 steps after it starts); joined, `generate_codes`.

        `resume_from` (int (F, 9), undelayed) continues a line from frames an earlier rendering of the same
        text, params and prompt already made: they are prefilled after the prompt, as more of it, and only
        the frames after them come out. `max_tokens` counts them too. This is how a retried job carries on
        from the codes a dead worker had streamed, whatever else shares the steps now. Input errors
        (`dia.text.TextError`, `ValueError`) are raised at the call, before any work; closing the iterator
        early cancels the request.
        """
        request = self._request(text, params or GenerationParams(), prompt, resume_from)
        if not self._busy.acquire(blocking=False):
            raise EngineBusy("this engine is already rendering; one request at a time")
        return self._stream(request)

    def stream_pcm(
        self,
        text: str,
        params: GenerationParams | None = None,
        prompt: VoicePrompt | None = None,
        *,
        speed: float = 1.0,
    ) -> Iterator[np.ndarray]:
        """48 kHz mono float32 audio of `text`, speed-changed and loudness-normalised, as it becomes ready."""
        # The pipeline's packets go unused here (the PCM comes before the encoder): the cheapest encoder will do.
        chunks = self._stream_chunks(text, params, prompt, speed=speed, opus=OpusSettings(complexity=0))
        return _pick(chunks, lambda chunk: chunk.pcm if len(chunk.pcm) else None)

    def stream_audio(
        self,
        text: str,
        params: GenerationParams | None = None,
        prompt: VoicePrompt | None = None,
        *,
        speed: float = 1.0,
        opus: OpusSettings | None = None,
    ) -> Iterator[list[bytes]]:
        """Batches of 20 ms 48 kHz stereo Opus packets of `text`, each batch as soon as it is ready.

        Like `stream_codes`, bad input raises at the call; closing the iterator cancels the request.
        """
        chunks = self._stream_chunks(text, params, prompt, speed=speed, opus=opus)
        return _pick(chunks, lambda chunk: chunk.packets or None)

    def audio_pipeline(self, *, speed: float = 1.0, opus: OpusSettings | None = None) -> AudioPipeline:
        """A pipeline for a line of several segments and pauses (codes from `stream_codes` go in), its packets
        encoded as `opus` says (default `OpusSettings()`)."""
        if self.codec is None:
            raise RuntimeError("no codec loaded: pass codec= (e.g. descript/dac_44khz) to Engine.load for audio")
        return AudioPipeline(self.codec, speed=speed, opus=opus, executor=self._audio_pool)

    def _stream_chunks(
        self, text: str, params: GenerationParams | None, prompt: VoicePrompt | None, *, speed: float,
        opus: OpusSettings | None,
    ) -> Iterator[Chunk]:  # fmt: skip
        # Settings are checked before any work.
        pipeline = self.audio_pipeline(speed=speed, opus=opus)
        codes = self.stream_codes(text, params, prompt)
        return self._through(pipeline, codes)

    @staticmethod
    def _through(pipeline: AudioPipeline, codes: Iterator[np.ndarray]) -> Iterator[Chunk]:
        try:
            for frames in codes:
                yield pipeline.push_codes(frames)
            yield pipeline.finish()
        finally:
            close = getattr(codes, "close", None)
            if close is not None:
                close()

    def scheduler(
        self, slots: int = 16, *, chunk_steps: int | None = None, use_cuda_graphs: bool | None = None
    ) -> Scheduler:
        """A continuous-batching scheduler with `slots` slots on this engine's weights (see tts_engine.batching).

        A request decodes exactly as `generate_codes` would for the same text, params (seed) and prompt; its
        codes are bit-equal when this engine is batch-invariant, and otherwise may differ once a matmul's
        rounding at another batch width flips a token (cuBLAS and MKL pick kernels by shape). Its caches are its own,
        allocated now; graphs (by default when this engine uses them) are captured now, one per batch-size and
        span bucket. `chunk_steps` (default: the engine's) is how many steps run between looks at the results.
        """
        graphs = bool(self._decoder.graphs) if use_cuda_graphs is None else use_cuda_graphs
        return Scheduler(
            self.model,
            lambda text, params, prompt, resume: self._request(text, params or GenerationParams(), prompt, resume),
            slots=slots,
            chunk_steps=self.chunk_steps if chunk_steps is None else chunk_steps,
            use_graphs=graphs,
        )

    def voice_from_clip(self, data: bytes, transcript: str, limits: ClipLimits | None = None) -> VoicePrompt:
        """A voice prompt from a user's clip (any common format) and what it says; `ClipError` when unusable."""
        if self.codec is None:
            raise RuntimeError("no codec loaded: pass codec= to Engine.load to encode voice clips")
        audio = decode_clip(data, limits or ClipLimits())
        return VoicePrompt(transcript, self.codec.encode(audio))

    def _request(
        self, text: str, params: GenerationParams, prompt: VoicePrompt | None, resume_from: np.ndarray | None = None
    ) -> Request:
        cfg = self.config
        channels = cfg.decoder.num_channels
        ids = dia_text.encode(
            text, prefix=None if prompt is None else prompt.transcript, max_bytes=cfg.encoder.max_positions
        )
        known: list[np.ndarray] = []  # frames prefilled before generation: the prompt's, then the resumed ones
        if prompt is not None:
            if prompt.codes.shape[1] != channels:
                raise ValueError(f"voice prompt codes have {prompt.codes.shape[1]} channels, the model {channels}")
            known.append(prompt.codes)
        if resume_from is not None and len(resume_from):
            known.append(resumed_frames(resume_from, channels))
        prompt_frames = sum(len(frames) for frames in known)
        if params.max_tokens > cfg.decoder.max_positions:
            raise ValueError(f"max_tokens is {params.max_tokens}, the model reaches {cfg.decoder.max_positions}")
        if params.max_tokens < prompt_frames + 2:
            what = "the voice prompt is" if resume_from is None else "the voice prompt and resumed frames are"
            raise ValueError(
                f"{what} {prompt_frames} frames long and max_tokens ({params.max_tokens}) counts "
                "them too: raise max_tokens or shorten the prompt"
            )
        generator = None
        if params.temperature > 0:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(secrets.randbelow(MAX_SEED) if params.seed is None else params.seed)
        return Request(
            text_ids=ids,
            prompt_TxC=np.concatenate(known) if known else None,
            cfg_scale=params.cfg_scale,
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            generator=generator,
        )

    def _stream(self, request: Request) -> Generator[np.ndarray, None, None]:
        decoder, delays = self._decoder, self.config.delay_pattern
        max_delay = self.config.max_delay
        try:
            written = decoder.start(0, request)  # grid rows 0..written are known
            grid_PxC = np.zeros((decoder.positions, self.config.decoder.num_channels), dtype=np.int64)
            grid_PxC[: written + 1] = decoder.read(0, 0, written + 1)[0]
            next_frame = written + 1  # frame 0 is BOS, frames 1..T the prompt
            steps = 1 + max_delay  # the first chunk ends exactly when the first new frame is final
            while True:
                decoder.run(steps)
                rows, pos, eos = decoder.read(0, written + 1, written + 1 + steps)
                grid_PxC[written + 1 : pos + 1] = rows[: pos - written]
                written = pos
                stop = pos - max_delay + 1 if eos == NOT_ENDED else min(pos - max_delay + 1, eos)
                if stop > next_frame:
                    yield undelay(grid_PxC, delays, next_frame, stop)
                    next_frame = stop
                # Steps left until the last channel ends: exact once channel 0 has ended, else bounded by the cap.
                end = (eos if eos != NOT_ENDED else request.max_tokens - 1) + max_delay
                if pos >= end:
                    return
                steps = min(self.chunk_steps, end - pos)  # a done slot's steps would be spent for nothing
        finally:
            decoder.stop(0)
            self._busy.release()


def _pick(chunks: Iterator[Chunk], part: Callable[[Chunk], _T | None]) -> Iterator[_T]:
    """The non-empty `part` of each chunk; closing this closes `chunks` (and so cancels the request)."""
    try:
        for chunk in chunks:
            value = part(chunk)
            if value is not None:
                yield value
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
