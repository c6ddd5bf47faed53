"""The documentation: README.md stays a first page, and neither it nor docs/*.md leaks.

README.md is what a newcomer reads first, so it stays short; the manual lives in docs/. Both are
read by people without this project's tracker, network or build machines, so they carry no
issue numbers, no links that leave the repository (loopback, cluster-internal `.svc` names and
placeholders excepted), no build machine's absolute paths, and no relative link to a file that
is not in the repository. Text only: no network, no markdown renderer.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = (README, *sorted((ROOT / "docs").glob("*.md")))
README_MAX_LINES = 220

# `#12` but not a heading (`## Title`), an HTML entity (`&#12;`) or a URL fragment (`a/#12`).
ISSUE_REFERENCE = re.compile(r"(?<![\w&/#])#\d+\b|\bissues?\s+#?\d+\b", re.IGNORECASE)
URL = re.compile(r"https?://[^\s)\]>`'\"|]*", re.IGNORECASE)
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0"})
PLACEHOLDER_HOSTS = frozenset({"host", "example.com", "example.org", "example.net"})
MACHINE_PATH = re.compile(r"/tmp/pytest-of-|(?<![\w.~-])/(?:work|root)/")
FENCED_CODE = re.compile(r"^ *(```|~~~).*?^ *\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _lines_with(pattern: re.Pattern[str], text: str) -> list[str]:
    return [
        f"line {number}: {match.group(0)!r}"
        for number, line in enumerate(text.splitlines(), start=1)
        for match in pattern.finditer(line)
    ]


def _host(url: str) -> str:
    authority = re.split(r"[/?#]", url.split("://", 1)[1], maxsplit=1)[0]
    authority = authority.rsplit("@", 1)[-1].lower()
    if authority.startswith("["):
        return authority[: authority.find("]") + 1]
    return authority.split(":", 1)[0]


def _allowed_host(host: str) -> bool:
    return (
        host in LOCAL_HOSTS
        or host in PLACEHOLDER_HOSTS
        or host.endswith((".svc", ".svc.cluster.local", ".example", ".example.com"))
        or not host
        or any(mark in host for mark in ("<", ">", "…", "..."))
    )


def _relative_links(text: str) -> list[str]:
    prose = INLINE_CODE.sub("", FENCED_CODE.sub("", text))
    targets = [*INLINE_LINK.findall(prose), *REFERENCE_LINK.findall(prose)]
    return [t for t in targets if not SCHEME.match(t) and not t.startswith("#")]


def test_the_readme_is_a_first_page_not_the_manual() -> None:
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail into docs/"
    )


def test_the_docs_folder_is_found() -> None:
    assert len(PAGES) > 1, "no docs/*.md found: the checks below would pass on nothing"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_no_page_cites_an_issue_number(page: Path) -> None:
    assert _lines_with(ISSUE_REFERENCE, page.read_text()) == []


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_no_page_links_outside_the_repository_or_the_cluster(page: Path) -> None:
    outbound = [
        f"line {number}: {url}"
        for number, line in enumerate(page.read_text().splitlines(), start=1)
        for url in URL.findall(line)
        if not _allowed_host(_host(url))
    ]
    assert outbound == []


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_no_page_shows_a_build_machines_absolute_path(page: Path) -> None:
    assert _lines_with(MACHINE_PATH, page.read_text()) == []


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_relative_link_names_a_file_in_the_repository(page: Path) -> None:
    broken = []
    for target in _relative_links(page.read_text()):
        resolved = (page.parent / target.split("#", 1)[0]).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("see #12 for why", True),
        ("as issue 9 asked", True),
        ("Issue #7.", True),
        ("issues 3 and 4", True),
        ("## 12 sections", False),
        ("# Title", False),
        ("&#8212; dash", False),
        ("an anchor [x](#scale-to-zero)", False),
        ("colour #12ab34", False),
    ],
)
def test_issue_references_are_told_from_headings_and_anchors(text: str, found: bool) -> None:
    assert bool(ISSUE_REFERENCE.search(text)) is found


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:9443/endpoint", True),
        ("https://127.0.0.1:<port>/<webhook>", True),
        ("http://localhost:8080", True),
        ("http://prometheus-operated.monitoring.svc:9090", True),
        ("http://<podIP>:9090", True),
        ("http://host:6333", True),
        ("https://registry.example.com/tidal", True),
        ("https://kopf.readthedocs.io", False),
        ("https://github.com/org/repo/issues/3", False),
        ("http://prometheus-operated.monitoring:9090", False),
    ],
)
def test_links_are_told_apart_by_host(url: str, allowed: bool) -> None:
    assert _allowed_host(_host(url)) is allowed


@pytest.mark.parametrize(
    ("text", "links"),
    [
        ("[a](docs/a.md) and [b](docs/b.md#part)", ["docs/a.md", "docs/b.md#part"]),
        ("[top](#top), [web](https://x.example), `[c](not/a/link.md)`", []),
        ("```\n[c](in/code.md)\n```\n[ref]: docs/ref.md", ["docs/ref.md"]),
    ],
)
def test_relative_links_are_found_outside_code(text: str, links: list[str]) -> None:
    assert _relative_links(text) == links


def test_the_configuration_page_names_every_setting_the_operator_reads() -> None:
    read = {
        name
        for path in (ROOT / "operator" / "tidal").rglob("*.py")
        for name in re.findall(r"\bTIDAL_[A-Z][A-Z0-9_]*[A-Z0-9]\b", path.read_text())
    }
    documented = set(
        re.findall(r"\bTIDAL_[A-Z0-9_]+\b", (ROOT / "docs/configuration.md").read_text())
    )
    assert sorted(read - documented) == []
