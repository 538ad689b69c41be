"""A ``.keras`` file checked before Keras opens it.

A ``.keras`` file is a zip archive (``config.json``, ``metadata.json``,
``model.weights.h5``). Keras reads ``config.json`` whole into memory, so a small
archive whose member unpacks to gigabytes (a zip bomb) would fill memory before
any error; a truncated file gets Keras's misleading "File not found". Every
``.keras`` trainkit loads -- a pretrained source, a run's ``model.keras`` or
``pretrained_source.keras`` -- is checked here first, from the archive's
directory alone (nothing is unpacked).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from trainkit.errors import ConfigError

MAX_MEMBERS = 1000
MAX_JSON_BYTES = 64 << 20
"""``config.json`` of a large KerasHub model is a few hundred KiB."""
MAX_RATIO = 200
"""Unpacked to packed size of one member; weights compress 1-3x, a zip bomb 1000x."""
_SMALL = 1 << 20


def check_keras_archive(path: str | os.PathLike, *, what: str) -> None:
    """Raise a one-line :class:`ConfigError` (``what`` names the field or file) unless ``path``
    is a Keras archive whose members are few and of plausible sizes."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except FileNotFoundError:
        raise ConfigError(f"{what}: {path} does not exist") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ConfigError(
            f"{what}: {path} is not a readable .keras file (a zip archive): it is damaged or truncated ({str(err)[:80]})"
        ) from None
    names = {member.filename for member in members}
    if "config.json" not in names:
        raise ConfigError(f"{what}: {path} is a zip archive but not a Keras model (no config.json)")
    if len(members) > MAX_MEMBERS:
        raise ConfigError(f"{what}: {path} holds {len(members):,} files; a Keras model file holds a few")
    for member in members:
        if member.filename.endswith(".json") and member.file_size > MAX_JSON_BYTES:
            raise ConfigError(
                f"{what}: {path}: its {member.filename} unpacks to {member.file_size:,} bytes, more than the "
                f"{MAX_JSON_BYTES >> 20} MiB a model's description takes (a zip bomb?)"
            )
        if member.file_size > _SMALL and member.file_size > MAX_RATIO * max(member.compress_size, 1):
            raise ConfigError(
                f"{what}: {path}: its {member.filename} unpacks {member.file_size // max(member.compress_size, 1):,} "
                f"times larger than it is stored ({member.file_size:,} bytes); a model never compresses that much (a zip bomb?)"
            )
