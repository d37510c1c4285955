"""Where model files come from: a local folder as given, or a Hugging Face hub id fetched once into the cache.

Shared by the Dia weights and the DAC codec, so both fail the same way: one line that names the folder or the
id, and, when the hub cannot be reached, how to use a local copy instead. Progress bars are huggingface_hub's.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class ModelLoadError(Exception):
    """A model cannot be found or loaded; `str()` names the folder, hub id or tensor, and what to do."""


def resolve(model: str, files: Sequence[str], *, setting: str) -> Path:
    """The local folder of `model`: a folder as given, or hub id `owner/name` downloaded (only `files` patterns).

    `setting` names the setting a user changes to point at a local folder instead (e.g. DIA_MODEL).
    """
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path} is a file; point at the folder holding config.json and the weights")
        return path
    if not _HUB_ID.fullmatch(model):
        raise ModelLoadError(f"model folder {path} does not exist (and {model!r} is not a hub id like owner/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    log.info("fetching %s from the Hugging Face hub (cached after the first time)", model)
    try:
        return Path(snapshot_download(repo_id=model, allow_patterns=list(files)))
    except (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, OSError, ValueError) as exc:
        cause = " ".join(str(exc).split()) or type(exc).__name__
        raise ModelLoadError(
            f"cannot get {model!r} from the Hugging Face hub ({type(exc).__name__}: {cause[:300]}). On an offline "
            f"machine, download it elsewhere (`huggingface-cli download {model}`), copy the folder over and point "
            f"{setting} at that local folder"
        ) from exc


def revision(folder: Path) -> str:
    """A short id of what `folder` holds: the commit of a hub snapshot, else a hash of its files' names, sizes
    and modification times (so replacing the weights changes it, as cache keys need)."""
    if folder.parent.name == "snapshots":
        return folder.name[:12]
    digest = hashlib.sha256()
    for path in sorted([*folder.glob("*.json"), *folder.glob("*.safetensors")]):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:12]
