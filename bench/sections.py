"""Rewriting one benchmark's section of a Markdown file (docs/benchmarks.md) between its markers.

Each benchmark owns the text between its `<!-- bench:NAME:start -->` and `...:end -->` markers
and leaves everything else alone; a file without the markers gets the section appended.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_between"]


def write_between(path: Path, start: str, end: str, section: str) -> None:
    """Replace the text from `start` to `end` (markers included) in `path` with `section`."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
