"""Structural checks of report pages: every local link and figure resolves, nothing remote."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

#: (tag, attribute) pairs whose URL the browser fetches to render the page.
RESOURCE_ATTRS = {("img", "src"), ("script", "src"), ("link", "href"), ("object", "data"),
                  ("iframe", "src"), ("embed", "src"), ("source", "src"), ("image", "href"),
                  ("image", "xlink:href"), ("use", "href"), ("use", "xlink:href")}


class _LinkCollector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, url)

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)
            if value and (name in ("href", "src", "data", "xlink:href")):
                self.urls.append((tag, name, value.strip()))


def collect_links(html_file: str | Path) -> tuple[list[tuple[str, str, str]], set[str]]:
    """All (tag, attribute, URL) references and element ids of an HTML or SVG file."""
    parser = _LinkCollector()
    parser.feed(Path(html_file).read_text(encoding="utf-8"))
    return parser.urls, parser.ids


def check_report(html_file: str | Path, *, follow_figures: bool = True) -> list[str]:
    """Problems found in a report page; an empty list means it is self-contained.

    Checked: every local ``href``/``src``/``data`` points to an existing file; every
    ``#fragment`` names an element of the page; no resource (script, style sheet, image,
    object) is loaded from the network. Links to web pages (``<a href="https://...">``) are
    allowed: following them is the reader's choice. With ``follow_figures``, SVG figures the
    page embeds are checked the same way.
    """
    html_file = Path(html_file)
    urls, ids = collect_links(html_file)
    problems = []
    for tag, attr, url in urls:
        parsed = urlparse(url)
        where = f"{html_file.name}: <{tag} {attr}={url!r}>"
        if parsed.scheme in ("data", "mailto", "javascript"):
            continue
        if parsed.scheme in ("http", "https") or url.startswith("//"):
            if (tag, attr) in RESOURCE_ATTRS:
                problems.append(f"{where} loads a remote resource")
            continue
        if parsed.scheme not in ("", "file"):
            problems.append(f"{where} uses an unsupported scheme")
            continue
        if not parsed.path:
            if parsed.fragment and parsed.fragment not in ids:
                problems.append(f"{where} points to a missing anchor")
            continue
        target = (Path(unquote(parsed.path)) if parsed.scheme == "file"
                  else html_file.parent / unquote(parsed.path))
        if not target.is_file():
            problems.append(f"{where} points to a missing file")
        elif follow_figures and target.suffix == ".svg" and (tag, attr) in RESOURCE_ATTRS:
            problems.extend(check_report(target, follow_figures=False))
    return problems
