"""Files named in tool arguments: absolute, inside EXAI_ALLOWED_ROOTS after resolving symlinks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import trio

from exai.tools.base import ToolArgumentError

MAX_FILE_BYTES: Final = 256 * 1024


def check_path(path: str, allowed_roots: list[Path]) -> Path:
    """The resolved path, or ToolArgumentError naming it and saying why not."""
    if not os.path.isabs(path):
        raise ToolArgumentError(f"File path {path!r} must be absolute")
    resolved = Path(path).resolve()
    roots = [Path(root).resolve() for root in allowed_roots]
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        shown = os.pathsep.join(str(r) for r in roots)
        raise ToolArgumentError(f"File path {path!r} is outside the allowed roots ({shown}; EXAI_ALLOWED_ROOTS)")
    return resolved


async def read_files(paths: list[str], allowed_roots: list[Path]) -> str:
    """The files' contents as one prompt section; each file at most MAX_FILE_BYTES."""
    checked = [check_path(p, allowed_roots) for p in paths]
    parts = []
    for original, path in zip(paths, checked, strict=True):
        try:
            data = await trio.Path(path).read_bytes()
        except OSError as exc:
            raise ToolArgumentError(f"File path {original!r} cannot be read: {exc.strerror}") from None
        note = ""
        if len(data) > MAX_FILE_BYTES:
            data = data[:MAX_FILE_BYTES]
            note = f" (first {MAX_FILE_BYTES} bytes)"
        text = data.decode("utf-8", errors="replace")
        parts.append(f"--- {original}{note} ---\n{text}")
    return "\n\n".join(parts)
