"""Self-contained HTML pages: escaping, tables, embedded PNG figures, the page frame.

Every image is embedded as a base64 ``data:`` URI and the page carries a Content
Security Policy that forbids loading anything else (``default-src 'none'``), so a report
opens the same offline, from an e-mail attachment or from a CI artefact; there is no
JavaScript.  The builders return strings; :func:`page` puts them in one document.
"""

from __future__ import annotations

import base64
import datetime
import html
import math
import platform
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

__all__ = ["REPORT_FILE", "Cell", "definitions", "environment", "figure", "page",
           "png_data_uri", "run_info", "section", "table", "write"]

REPORT_FILE = "report.html"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       color: #1d1d1f; margin: 0; background: #fafafa; line-height: 1.45; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { font-size: 1.6em; margin: 0.2em 0 0.4em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
p.lead { font-size: 1.05em; color: #333; }
pre, code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
            font-size: 0.9em; }
pre { background: #f4f4f6; padding: 10px 12px; overflow-x: auto; white-space: pre-wrap;
      overflow-wrap: break-word; border-radius: 4px; }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 0.92em; }
th, td { padding: 4px 9px; border-bottom: 1px solid #e3e3e3; text-align: right;
         vertical-align: top; }
td { white-space: nowrap; }
.scroll { overflow-x: auto; }
th { background: #f0f0f3; font-weight: 600; }
td:first-child, th:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #fafafc; }
table.kv td:first-child { color: #555; }
table.kv td, table.kv th, table.text td, table.text th { text-align: left;
  white-space: normal; }
td.best { font-weight: 700; }
table.wide { font-size: 0.82em; }
table.wide th, table.wide td { padding: 4px 5px; }
table.wide td:first-child { white-space: normal; overflow-wrap: anywhere; max-width: 9em; }
dl.explain { font-size: 0.9em; color: #333; margin: 6px 0 0; }
dl.explain dt { font-weight: 600; float: left; clear: left; width: 12em; }
dl.explain dd { margin: 0 0 4px 12.5em; }
figure { margin: 14px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.88em; color: #444; margin-top: 4px; max-width: 60em; }
.grid { display: flex; flex-wrap: wrap; gap: 12px 20px; }
.grid figure { margin: 4px 0; }
.verdict { font-weight: 600; padding: 6px 10px; border-radius: 4px; display: inline-block; }
.verdict.ok { background: #e6f4ea; color: #1e5c2c; }
.verdict.bad { background: #fdecea; color: #8a1c12; }
.note { color: #555; font-size: 0.9em; }
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(text) -> str:
    """HTML-escaped ``str(text)``."""
    return html.escape(str(text), quote=True)


def png_data_uri(png: bytes | str | Path) -> str:
    """A ``data:image/png;base64,...`` URI of PNG bytes or of a PNG file."""
    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    if not data.startswith(b"\x89PNG"):
        raise ValueError("png_data_uri expects PNG data (it does not start with the PNG "
                         "signature)")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure(png: bytes | str | Path, *, alt: str, caption: str = "", name: str = "") -> str:
    """An embedded PNG with alternative text and a caption (``caption`` is HTML)."""
    attr = f' data-name="{esc(name)}"' if name else ""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return (f'<figure{attr}><img alt="{esc(alt)}" src="{png_data_uri(png)}">{cap}'
            f"</figure>")


class Cell:
    """A table cell: its text, and the full-precision numbers it shows as ``data-*``
    attributes (so that a test or a script can read the exact values back)."""

    def __init__(self, text, *, data: dict | None = None, cls: str = "", title: str = ""):
        self.text, self.data, self.cls, self.title = str(text), dict(data or {}), cls, title

    def render(self, tag: str = "td") -> str:
        attrs = "".join(f' data-{esc(k)}="{esc(_num(v))}"' for k, v in self.data.items())
        if self.cls:
            attrs += f' class="{esc(self.cls)}"'
        if self.title:
            attrs += f' title="{esc(self.title)}"'
        return f"<{tag}{attrs}>{esc(self.text)}</{tag}>"


def _num(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return "" if v is None else str(v)


def table(header: Sequence[str], rows: Iterable[Sequence], *, cls: str = "",
          row_keys: Sequence[str] | None = None, table_id: str = "") -> str:
    """A table; cells are :class:`Cell` objects or plain values (escaped).  ``row_keys``
    become each row's ``data-key`` attribute."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        key = f' data-key="{esc(row_keys[i])}"' if row_keys is not None else ""
        cells = "".join(c.render() if isinstance(c, Cell) else f"<td>{esc(c)}</td>"
                        for c in row)
        body.append(f"<tr{key}>{cells}</tr>")
    attrs = (f' class="{esc(cls)}"' if cls else "") + (f' id="{esc(table_id)}"'
                                                        if table_id else "")
    return (f'<div class="scroll"><table{attrs}><thead><tr>{head}</tr></thead><tbody>'
            f"{''.join(body)}</tbody></table></div>")


def definitions(items: Iterable[tuple[str, str]]) -> str:
    """A list of ``(term, explanation)``; explanations are HTML."""
    return ('<dl class="explain">' + "".join(f"<dt>{esc(t)}</dt><dd>{d}</dd>"
                                             for t, d in items) + "</dl>")


def section(title: str, body: str, *, sid: str = "") -> str:
    """A titled section (``body`` is HTML)."""
    anchor = f' id="{esc(sid)}"' if sid else ""
    return f"<section{anchor}><h2>{esc(title)}</h2>{body}</section>"


def environment(extra: dict | None = None) -> dict[str, str]:
    """Versions of the software that produced a result, and when."""
    out = {"created": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    for dist in ("ppl-dgm", "torch", "pyro-ppl", "arviz", "numpy", "xarray", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["python"] = platform.python_version()
    out["platform"] = platform.platform()
    out.update({k: str(v) for k, v in (extra or {}).items()})
    return out


def run_info(command: str | None, settings: dict, *, versions: dict | None = None) -> str:
    """The "how this was made" section: the command, the settings and the versions."""
    cmd = (f"<pre>{esc(command)}</pre>" if command else
           '<p class="note">Made from Python (no command line); the settings below are '
           "complete.</p>")
    rows = [(k, _setting(v)) for k, v in settings.items()]
    vers = versions if versions is not None else environment()
    return section("How this was made", (
        "<h3>Command</h3>" + cmd
        + "<h3>Settings</h3>" + table(["setting", "value"], rows, cls="kv")
        + "<h3>Software</h3>" + table(["package", "version"], list(vers.items()), cls="kv")),
        sid="provenance")


def _setting(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_setting(x)}" for k, x in v.items()) or "–"
    if isinstance(v, (list, tuple)):
        return ", ".join(_setting(x) for x in v) or "–"
    return "–" if v is None else str(v)


def page(title: str, lead: str, sections: Sequence[str]) -> str:
    """The whole document: no scripts, nothing loaded from anywhere (see the CSP)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head>"
            f"<body><main><h1>{esc(title)}</h1><p class=\"lead\">{lead}</p>"
            + "".join(sections) + "</main></body></html>\n")


def write(path: str | Path, text: str) -> Path:
    """Write a page next to its final place and rename it there (no torn reports)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
