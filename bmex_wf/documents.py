"""Reading small settings files (JSON, TOML) with one-line errors that name the file."""

from __future__ import annotations

from pathlib import Path


def read_document(path, loads, errors: tuple, kind: str):
    """``loads(text)`` of the file ``path``.

    An unreadable file, or one that ``loads`` rejects with one of ``errors``, raises
    ``ValueError("<path>: not a readable <kind> (<cause>)")``.
    """
    path = Path(path)
    try:
        return loads(path.read_text())
    except (OSError, *errors) as exc:
        raise ValueError(f"{path}: not a readable {kind} ({exc})") from None
