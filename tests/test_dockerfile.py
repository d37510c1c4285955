"""The Dockerfile, read as text (no Docker engine in CI): what each image installs and copies.

A wrong line here shows only when a user builds the image, or later when a worker starts on a GPU; these checks
catch the known ways it can go wrong without building it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _stages() -> dict[str, str]:
    """Each stage's instructions (line continuations joined), by its name."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    stages: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if match := re.match(r"FROM\s+\S+\s+AS\s+(\w+)", line, re.IGNORECASE):
            name = match.group(1)
        stages[name] = stages.get(name, "") + line + "\n"
    return stages


def _apt(stage: str) -> set[str]:
    installs = re.findall(r"apt-get install ([^&]+)", stage)
    return {word for words in installs for word in words.split() if not word.startswith("-")}


def test_each_image_has_the_system_libraries_its_code_loads() -> None:
    stages = _stages()
    assert {"base", "bot", "worker"} <= set(stages)
    assert "FROM base AS bot" in stages["bot"] and "FROM base AS worker" in stages["worker"]
    assert "libopus0" in _apt(stages["base"]), "both encode or decode Opus (ctypes and discord.py load libopus)"
    worker = _apt(stages["worker"])
    assert "ffmpeg" in worker, "the worker decodes voice clips with ffmpeg"
    assert {"gcc", "libc6-dev"} <= worker, "Triton compiles its kernel launchers with the system C compiler"


def test_the_images_copy_every_package_they_install() -> None:
    copied = set(re.findall(r"^COPY (\S+) \./\1\s*$", _stages()["base"], re.MULTILINE))
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert set(packages["packages"]) <= copied
    for source in re.findall(r"^COPY ((?:\S+ )+)\./?\S*$", (ROOT / "Dockerfile").read_text(), re.MULTILINE):
        for path in source.split():
            assert (ROOT / path).exists(), f"the Dockerfile copies {path}, which is not in the repository"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not copied & set(ignored), "a copied folder is in .dockerignore"


def test_the_worker_pins_torch_before_the_project_can_pull_another_build() -> None:
    worker = _stages()["worker"]
    pin = re.search(r"ARG TORCH_SPEC=torch==(\S+)", worker)
    assert pin is not None
    install = re.search(r'pip install "\$\{TORCH_SPEC\}" && pip install "\.\[worker\]"', worker)
    assert install is not None, "torch first, then the project, in one layer"


def test_the_worker_keeps_weights_and_kernels_in_the_volume_the_readme_mounts() -> None:
    worker = _stages()["worker"]
    cache = "/home/app/.cache"
    for variable in ("HF_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
        assert re.search(rf"{variable}={cache}/", worker), f"{variable} is not under {cache}"
    # Made after USER app, so a fresh named volume mounted there is the app user's to write.
    assert worker.index("USER app") < worker.index('RUN mkdir -p "$HF_HOME"')
    assert f"-v dia-cache:{cache} dia-worker" in (ROOT / "README.md").read_text()
