"""HTML pages as text with their headings kept as markdown headings: trafilatura's main-content extraction
(navigation, footers and other boilerplate dropped; tables and lists kept with separators) where it is installed,
and a stdlib parser otherwise, or where trafilatura fell back to a plain-text extraction that lost the headings."""

from __future__ import annotations

import functools
import logging
import re
from html.parser import HTMLParser
from typing import Iterator

log = logging.getLogger(__name__)

MARKDOWN_HEADING = re.compile(r"^#{1,6} ", flags=re.MULTILINE)


class _HTMLText(HTMLParser):
    """Visible text of an HTML page, with headings kept as markdown headings for the splitter."""

    # not content: code, and a page's navigation, footer and side bars (boilerplate that every page repeats)
    SKIP = {"script", "style", "noscript", "head", "nav", "footer", "aside", "template"}
    BLOCK = {"p", "div", "br", "li", "tr", "section", "article", "table", "ul", "ol", "dl", "dt", "blockquote",
             "pre", "figcaption", "main"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False
        self._cells = 0  # cells begun in the current table row
        self._in_cell = 0  # inside a table cell: its paragraphs (Word writes <td><p>...</p></td>) stay on the row
        self._after = ""  # dt or dd: what the last definition-list item was

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self._skip += 1
        if tag == "title":
            self._in_title = True
        if self._skip:  # inside boilerplate: no headings or separators either
            return
        if tag == "tr":
            self._cells = 0
        if re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in ("td", "th"):  # cells stay apart: "alpha | beta", not "alphabeta"
            self.parts.append(" | ") if self._cells else self._space()
            self._cells += 1
            self._in_cell += 1
        elif tag == "dd":  # "term: definition", further definitions after "; "
            self.parts.append(": " if self._after == "dt" else "; ")
            self._after = "dd"
        elif tag in self.BLOCK and self._in_cell and tag != "tr":
            self._space()
        elif tag in self.BLOCK:
            self.parts.append("\n\n" if tag == "p" else "\n")
            self._after = "dt" if tag == "dt" else self._after

    def _space(self):
        if self.parts and not self.parts[-1][-1:].isspace():
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
            return
        if tag == "title":
            self._in_title = False
        if self._skip:
            return
        if tag in ("td", "th"):
            self._in_cell = max(0, self._in_cell - 1)
        elif re.fullmatch(r"h[1-6]", tag) or (tag == "p" and not self._in_cell):
            self.parts.append("\n\n")

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)

    def text(self) -> str:
        return re.sub(r"\n{3,}", "\n\n", "".join(self.parts)).strip()  # entities are already decoded


@functools.lru_cache(maxsize=1)
def _trafilatura_config():  # read once, not per page
    from trafilatura.settings import use_config

    config = use_config()
    for key in ("MIN_EXTRACTED_SIZE", "MIN_OUTPUT_SIZE"):  # short pages (a glossary entry) are content too
        config.set("DEFAULT", key, "1")
    config.set("DEFAULT", "EXTRACTION_TIMEOUT", "0")  # its timeout uses signals, which fail off the main thread
    return config


def _text(element) -> str:
    """An element's text with its line breaks kept and other whitespace collapsed."""
    parts = [element.text or ""]
    for child in element:
        parts += ["\n" if child.tag == "lb" else _text(child), child.tail or ""]
    return "\n".join(" ".join(line.split()) for line in "".join(parts).split("\n")).strip()


def _list(element) -> str:
    """'- item' lines; a definition list as 'term: definition; another' items, so each keeps what it defines."""
    items: list[list[str]] = []
    for item in element.iter("item"):
        rend, text = item.get("rend", ""), _text(item)
        if rend.startswith("dd") and items:
            items[-1][1] += ("; " if items[-1][1] else ": ") + text
        else:
            items.append([text, ""])
    return "\n".join(f"- {term}{definition}" for term, definition in items)


def _blocks(main) -> Iterator[str]:
    """Markdown blocks from trafilatura's XML: headings as '#', tables as 'a | b' rows, lists as '- ' items."""
    for element in main:
        if element.tag == "head":
            level = element.get("rend", "h2")[1:]
            yield "#" * (int(level) if level.isdigit() else 2) + " " + _text(element)
        elif element.tag == "list":
            yield _list(element)
        elif element.tag == "table":
            yield "\n".join(" | ".join(_text(cell) for cell in row.iter("cell")) for row in element.iter("row"))
        else:  # p, quote, code
            yield _text(element)


def main_text(html: str) -> str | None:
    """The page's main content as markdown by trafilatura, or None where it is not installed or found nothing.
    Its XML output is converted here: its text and markdown outputs decode entities a second time (the text
    '&lt;b&gt;' came out as '<b>') and backslash-escape markdown characters."""
    try:
        import trafilatura
    except ImportError:
        return None
    from xml.etree import ElementTree

    extracted = trafilatura.extract(html, output_format="xml", include_tables=True, include_comments=False,
                                    favor_recall=True, fast=True, config=_trafilatura_config())
    main = ElementTree.fromstring(extracted).find("main") if extracted else None
    text = "\n\n".join(block for block in _blocks(main) if block) if main is not None else ""
    return text or None


def full_text(html: str) -> tuple[str, str]:
    """(text, title) of all of a page's visible text but its navigation, footer and side bars, by the stdlib parser:
    for HTML that holds no boilerplate (a converted DOCX), where main-content extraction could only lose text."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return parser.text(), parser.title.strip()


def html_text(html: str) -> tuple[str, str]:
    """(text, title) of an HTML page: its main content by trafilatura where installed, else `full_text`."""
    text, title = full_text(html)
    extracted = main_text(html)
    if extracted is None or (MARKDOWN_HEADING.search(text) and not MARKDOWN_HEADING.search(extracted)):
        return text, title
    return extracted, title
