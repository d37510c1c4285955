"""The import direction of DESIGN.md, enforced.

1. The bot side (`bot`, `cogs.*`, `config`, `launcher`, `tts_engine.jobs`, `tts_engine.script`) never loads torch.
2. `tts_engine.dia` and `tts_engine.audio` never import discord, redis, config, bot or cogs.

Each import runs in a fresh interpreter, so what one module pulls in cannot hide behind another; a static scan
also catches imports inside functions, which an import alone would not execute.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCH_FREE_ROOTS = ("bot", "cogs", "config", "launcher")
# The contract the bot imports, and the worker loop (which test renderers run without the engine).
TORCH_FREE_EXTRA = (
    "tts_engine", "tts_engine.jobs", "tts_engine.job_events", "tts_engine.script", "tts_engine.scene",
    "tts_engine.characters", "tts_engine.rendering", "tts_engine.worker", "tts_engine.worker_run",
    "tts_engine.worker_store",
)  # fmt: skip
ENGINE_CORE = ("tts_engine.dia", "tts_engine.audio")
ENGINE_FACADE = (
    "tts_engine.engine",
    "tts_engine.params",
    "tts_engine.hub",
)  # the engine facade obeys the same rule as the core it wraps
ENGINE_FORBIDDEN = ("discord", "redis", "config", "bot", "cogs")
BOT_ROOTS = ("bot", "cogs", "config")  # what a bot-only host runs, installed with `.[bot]` (the bot image)


def _canonical(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def _worker_only_imports() -> tuple[str, ...]:
    """The import names of what only the worker extra installs (numpy, torch, ...): a bot-only host lacks them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    shared = {_canonical(r) for r in project["dependencies"] + extras["bot"]}
    worker_only = {_canonical(r) for r in extras["worker"]} - shared
    installed = importlib.metadata.packages_distributions()
    return tuple(sorted(name for name, dists in installed.items() if {_canonical(d) for d in dists} & worker_only))


WORKER_ONLY = _worker_only_imports()


def _walk(package: str) -> list[str]:
    """`package` and every module below it, found on disk (never imported here)."""
    folder = ROOT.joinpath(*package.split("."))
    names = [package]
    for info in pkgutil.walk_packages([str(folder)], prefix=f"{package}."):
        names.append(info.name)
    return names


def _existing(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _loaded_after_import(module: str, watched: tuple[str, ...]) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"watched = {watched!r}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(watched))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, f"importing {module} failed:\n{done.stderr}"
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


TORCH_FREE = sorted(
    {m for root in TORCH_FREE_ROOTS for m in _walk(root)} | {m for m in TORCH_FREE_EXTRA if _existing(m)}
)
BOT_MODULES = {m for root in BOT_ROOTS for m in _walk(root)}
ENGINE_MODULES = sorted({m for root in ENGINE_CORE for m in _walk(root)} | set(ENGINE_FACADE))


def test_the_lists_cover_the_packages() -> None:
    """The walk finds real modules, so an empty list cannot make the checks below pass vacuously."""
    assert {"bot", "bot.client", "bot.__main__", "config.settings", "launcher.supervisor", "tts_engine.jobs"} <= set(
        TORCH_FREE
    )
    assert {"tts_engine.dia", "tts_engine.dia.model", "tts_engine.audio", "tts_engine.engine"} <= set(ENGINE_MODULES)
    assert {"numpy", "torch", "transformers", "scipy", "ffmpeg"} <= set(WORKER_ONLY)
    assert {"bot.client", "cogs.characters", "config.settings"} <= BOT_MODULES


@pytest.mark.parametrize("module", TORCH_FREE)
def test_bot_side_never_loads_torch(module: str) -> None:
    """The bot's modules, and whatever they import, load nothing of the worker's install either: the bot image
    has only `.[bot]` (numpy included, which `tts_engine.characters` once loaded)."""
    watched = WORKER_ONLY if module in BOT_MODULES else ("torch", "transformers")
    assert _loaded_after_import(module, watched) == []


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_engine_core_never_loads_the_bot_side(module: str) -> None:
    assert _loaded_after_import(module, ENGINE_FORBIDDEN) == []


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_engine_core_has_no_lazy_imports_of_the_bot_side() -> None:
    files = [p for package in ENGINE_CORE for p in ROOT.joinpath(*package.split(".")).rglob("*.py")]
    files += [ROOT.joinpath(*name.split(".")).with_suffix(".py") for name in ENGINE_FACADE]
    assert files
    offenders = {str(p.relative_to(ROOT)): sorted(_imported_roots(p) & set(ENGINE_FORBIDDEN)) for p in files}
    assert {name: roots for name, roots in offenders.items() if roots} == {}


def test_bot_side_has_no_lazy_torch_imports() -> None:
    files = [p for root in TORCH_FREE_ROOTS for p in ROOT.joinpath(root).rglob("*.py")]
    files += [ROOT / "tts_engine" / f"{name}.py" for name in ("jobs", "script") if _existing(f"tts_engine.{name}")]
    offenders = {str(p.relative_to(ROOT)): sorted(_imported_roots(p) & {"torch", "transformers"}) for p in files}
    assert {name: roots for name, roots in offenders.items() if roots} == {}


def test_static_scan_sees_a_lazy_import(tmp_path: Path) -> None:
    """The scan reads imports inside functions, which the subprocess checks would not execute."""
    sample = tmp_path / "sample.py"
    sample.write_text("def later():\n    import redis.asyncio\n    from discord import opus\n")
    assert _imported_roots(sample) == {"redis", "discord"}
