"""The fakes' deterministic text helpers: token counts and stream deltas. No IO, no SDK.

Every fake counts tokens as whitespace-separated words and cuts a streamed answer the same way,
so a test can predict usage and deltas whatever the dialect. Kept apart from the wire modules so
that none of them loads another dialect's SDK to get them.
"""

from __future__ import annotations

import re

__all__ = ["split_chars", "split_text", "words"]


def words(text: str) -> int:
    """The fake's token count: whitespace-separated words."""
    return len(text.split())


def _groups(items: list[str], n: int) -> list[str]:
    """`items` joined into `n` runs as even as possible, padded with empty runs if short."""
    if n < 1:
        raise ValueError("chunks must be >= 1")
    q, r = divmod(len(items), n)
    bounds = [i * q + min(i, r) for i in range(n + 1)]
    return ["".join(items[bounds[i] : bounds[i + 1]]) for i in range(n)]


def split_text(text: str, n: int | None) -> list[str]:
    """Deltas whose concatenation is exactly `text`.

    None: one delta per word (leading whitespace attached, like model tokens). n: exactly n deltas
    — words grouped evenly, else characters, else padded with empty deltas.
    """
    pieces = re.findall(r"\s*\S+", text)
    tail = text[len("".join(pieces)) :]
    if tail:
        pieces.append(tail)
    if n is None:
        return pieces
    return _groups(pieces, n) if len(pieces) >= n else split_chars(text, n)


def split_chars(text: str, n: int) -> list[str]:
    """`n` deltas cut at character positions (mid-word, mid-token), padded with empty deltas
    if the text is shorter."""
    return _groups(list(text), n)
