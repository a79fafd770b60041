"""Fonts for figures whose text may be in any script: class names and run names.

Matplotlib draws every character with the first font of its family list that has it (font
fallback, matplotlib >= 3.6); its default, DejaVu Sans, has Latin, Greek and Cyrillic but no CJK.
`figure_fonts(texts)` adds, after the configured family, installed fonts that have the glyphs it
lacks (the usual CJK fonts first), and when no installed font has them says so once, naming the
font package to install, instead of drawing boxes silently.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import unicodedata
import warnings
from typing import Iterable, Iterator

from matplotlib import font_manager

from jaxcnn.report.plots import plt

log = logging.getLogger("jaxcnn")

# Tried first, in this order, when the default font lacks a glyph; then every other installed font.
PREFERRED_FAMILIES = (
    "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR", "Source Han Sans",
    "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "IPAexGothic", "IPAGothic",
    "NanumGothic", "Noto Sans", "Microsoft YaHei", "PingFang SC", "Hiragino Sans", "Arial Unicode MS",
)
# Fonts that "have" every character but draw a placeholder box for it: never a fallback.
PLACEHOLDER_FAMILIES = ("Last Resort",)
CJK_PACKAGE, OTHER_PACKAGE = "fonts-noto-cjk", "fonts-noto-core"  # Debian / Ubuntu
GLYPH_WARNING = r"Glyph .* missing from (current )?font"  # matplotlib's own, one per glyph

_reported: set[frozenset[str]] = set()


def _characters(texts: Iterable[str]) -> set[str]:
    return {char for text in texts for char in text if char.isprintable() and not char.isspace()}


def _default_font() -> str:
    """The file of the font matplotlib draws text with by default (rcParams' family)."""
    return font_manager.findfont(font_manager.FontProperties())


@functools.lru_cache(maxsize=None)
def _coverage(path: str) -> frozenset[str]:
    """The characters the font file at `path` has glyphs for."""
    try:
        return frozenset(map(chr, font_manager.get_font(path).get_charmap()))
    except (OSError, RuntimeError, ValueError):  # a font FreeType cannot read
        return frozenset()


@functools.lru_cache(maxsize=1)
def _candidates() -> tuple[tuple[str, str], ...]:
    """(family, font file) of every installed font, one regular file per family, the preferred
    families first. Fonts installed after matplotlib cached its list are added to it here."""
    manager = font_manager.fontManager
    known = {entry.fname for entry in manager.ttflist}
    for path in font_manager.findSystemFonts():
        if path not in known:
            with contextlib.suppress(Exception):  # a font matplotlib cannot read is no candidate
                manager.addfont(path)
    files: dict[str, str] = {}
    for entry in sorted(manager.ttflist, key=lambda e: (e.style != "normal", abs(_weight(e.weight) - 400))):
        if not entry.name.startswith(PLACEHOLDER_FAMILIES):
            files.setdefault(entry.name, entry.fname)
    rank = {family: i for i, family in enumerate(PREFERRED_FAMILIES)}
    return tuple(sorted(files.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def _weight(weight) -> int:
    return weight if isinstance(weight, int) else font_manager.weight_dict.get(weight, 400)


def _package(missing: set[str]) -> str:
    cjk = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "BOPOMOFO", "IDEOGRAPHIC", "HALFWIDTH", "FULLWIDTH")
    return CJK_PACKAGE if any(unicodedata.name(char, "").startswith(cjk) for char in missing) else OTHER_PACKAGE


def fallback_families(texts: Iterable[str]) -> list[str]:
    """Installed font families that have the glyphs of `texts` the default font lacks, in the
    order to try them (none when it has them all). Characters no installed font has are warned
    about once, with the font package that has them."""
    missing = _characters(texts) - _coverage(_default_font())
    chosen = []
    for family, path in _candidates() if missing else ():
        found = missing & _coverage(path)
        if found:
            chosen.append(family)
            missing -= found
            if not missing:
                break
    if missing and frozenset(missing) not in _reported:
        _reported.add(frozenset(missing))
        shown = ", ".join(sorted(missing)[:8]) + (" ..." if len(missing) > 8 else "")
        log.warning(f"No installed font has the characters {shown}: figures show them as boxes. Install a "
                    f"font that has them, e.g. the Debian / Ubuntu package {_package(missing)}")
    return chosen


@contextlib.contextmanager
def figure_fonts(texts: Iterable[str]) -> Iterator[None]:
    """Draw the figures made inside with fonts that have the glyphs of `texts` (see the module
    docstring); matplotlib's per-glyph warnings are silenced, `fallback_families` said it once."""
    families = fallback_families(texts)
    settings = {"font.family": [*plt.rcParams["font.family"], *families]} if families else {}
    with plt.rc_context(settings), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=GLYPH_WARNING, category=UserWarning)
        yield
