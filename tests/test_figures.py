"""Figures never fail a report (issue 19): any class name is drawn (surrogate escapes shown as the
text they spell, CJK in a font that has it, or one warning naming the font package), and a figure
that cannot be drawn is one warning line while the tables and other files are still written."""

import logging
import os

import numpy as np
import pytest

from jaxcnn.report.figures import plot_confusion, plot_mistakes, plot_reliability

ESCAPED = "\udcce\udca9mega"  # "Ωmega" as a class folder is listed under LANG=C
BEST = {"epoch": 1, "accuracy": 0.5, "loss": 0.7, "confusion_matrix": [[1, 1], [0, 2]]}


@pytest.fixture
def fonts(monkeypatch):
    """`jaxcnn.report.fonts`, with no warning said yet."""
    from jaxcnn.report import fonts

    monkeypatch.setattr(fonts, "_reported", set())
    return fonts


def test_class_names_read_under_an_ascii_locale_are_drawn(tmp_path):
    """Old code: `TypeError: set_text(): incompatible function arguments` from matplotlib."""
    from jaxcnn.report.classification import calibration

    plot_confusion(np.array([[3, 1], [0, 2]]), [ESCAPED, "b"], tmp_path / "c.png", f"run {ESCAPED}")
    image = np.zeros((8, 8, 1), np.uint8)
    plot_mistakes([(0.9, image, 0, 1)], [ESCAPED, "b"], tmp_path / "m.png", "mistakes")
    bins = calibration(np.array([0, 1]), np.array([[0.9, 0.1], [0.4, 0.6]]))
    plot_reliability(bins, tmp_path / "r.png", f"reliability {ESCAPED}")
    assert all((tmp_path / name).stat().st_size > 5_000 for name in ("c.png", "m.png", "r.png"))


def test_a_figure_that_cannot_be_drawn_is_one_warning_and_the_tables_are_written(tmp_path, monkeypatch, caplog):
    """Old code: the exception escaped write_best_report before per_class.csv was written."""
    from jaxcnn.report import final

    (tmp_path / "confusion.png").write_bytes(b"an older run's figure")

    def broken(confusion, names, path, title):
        with open(path, "wb") as f:
            f.write(b"half a png")
        raise TypeError("set_text(): incompatible function arguments. The following argument types are supported:\n"
                        "    1. (self: matplotlib.ft2font.FT2Font, ...)")

    monkeypatch.setattr(final, "plot_confusion", broken)
    with caplog.at_level(logging.WARNING, logger="jaxcnn"):
        files = final.write_best_report(tmp_path, {"best": BEST}, ["a", "b"], "test", "lenet5")
    assert [f.name for f in files] == ["per_class.csv", "per_class.md"]
    assert (tmp_path / "per_class.csv").read_text().splitlines()[1].startswith("a,")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "confusion.png not drawn (TypeError: set_text(): incompatible function arguments" in warnings[0]
    assert sorted(os.listdir(tmp_path)) == ["per_class.csv", "per_class.md"]  # no half, nor an older, figure


def test_the_run_logger_finishes_when_its_figures_fail(tmp_path, monkeypatch, caplog):
    """`RunLogger.finish` and `close` (the end of `jaxcnn train`): every file but the figures."""
    from jaxcnn.report import final, run_log

    def broken(*args, **kwargs):
        raise RuntimeError("no renderer")

    monkeypatch.setattr(final, "plot_confusion", broken)
    monkeypatch.setattr(run_log, "plot_history", broken)
    logger = run_log.RunLogger(tmp_path)
    logger.epoch_end({"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "lr": 0.1, "epoch_seconds": 1.0,
                      "images_per_second": 10.0}, 1)
    config = {"model": {"arch": "lenet5"}, "data": {"dir": f"/data/{ESCAPED}"}}
    with caplog.at_level(logging.WARNING, logger="jaxcnn"):
        logger.finish({"best": BEST, "split": "test"}, [ESCAPED, "b"], "test", config, best_epoch=1)
        logger.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w.split(" not drawn")[0].rsplit("/", 1)[-1] for w in warnings] == ["confusion.png", "curves.png"]
    assert {"per_class.csv", "per_class.md", "metrics.csv"} <= set(os.listdir(tmp_path))
    assert not {"confusion.png", "curves.png"} & set(os.listdir(tmp_path))


# --------------------------------------------------------------------------------- fonts

def fake_fonts(fonts, monkeypatch, installed: dict[str, str]):
    """Installed fonts as family -> the characters it has; the default font has Latin and Greek."""
    coverage = {"default.ttf": frozenset(map(chr, range(0x20, 0x400)))}
    coverage |= {f"{family}.ttf": frozenset(chars) for family, chars in installed.items()}
    monkeypatch.setattr(fonts, "_default_font", lambda: "default.ttf")
    monkeypatch.setattr(fonts, "_coverage", lambda path: coverage.get(path, frozenset()))
    monkeypatch.setattr(fonts, "_candidates", lambda: tuple((family, f"{family}.ttf") for family in installed))


def test_fallback_fonts_are_the_installed_ones_that_have_the_glyphs(fonts, monkeypatch, caplog):
    fake_fonts(fonts, monkeypatch, {"Noto Sans CJK JP": "猫犬", "Noto Sans Arabic": "قط", "Unused": "x"})
    with caplog.at_level(logging.WARNING, logger="jaxcnn"):
        assert fonts.fallback_families(["cat", "Ωmega"]) == []
        assert fonts.fallback_families(["猫", "dog"]) == ["Noto Sans CJK JP"]
        assert fonts.fallback_families(["猫", "قط"]) == ["Noto Sans CJK JP", "Noto Sans Arabic"]
    assert not caplog.records


def test_glyphs_no_installed_font_has_are_one_warning_naming_the_package(fonts, monkeypatch, caplog):
    fake_fonts(fonts, monkeypatch, {"Noto Sans Arabic": "قط"})
    with caplog.at_level(logging.WARNING, logger="jaxcnn"):
        assert fonts.fallback_families(["猫", "犬"]) == []
        assert fonts.fallback_families(["犬", "猫"]) == []  # the same characters: said once
        assert fonts.fallback_families(["ሰ"]) == []  # Ethiopic: another package
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "犬, 猫" in messages[0] and "fonts-noto-cjk" in messages[0]
    assert "ሰ" in messages[1] and "fonts-noto-core" in messages[1]


def test_the_placeholder_font_is_never_a_fallback_and_the_preferred_come_first(fonts, monkeypatch):
    from matplotlib import font_manager

    entries = [font_manager.FontEntry(fname=f"/f/{name}.ttf", name=name) for name in
               ("Last Resort High-Efficiency", "AAA Font", "WenQuanYi Zen Hei", "Noto Sans CJK JP")]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", entries)
    monkeypatch.setattr(font_manager, "findSystemFonts", lambda: [])
    fonts._candidates.cache_clear()
    try:
        assert [family for family, _ in fonts._candidates()] == ["Noto Sans CJK JP", "WenQuanYi Zen Hei", "AAA Font"]
    finally:
        fonts._candidates.cache_clear()


def test_cjk_class_names_are_drawn_with_an_installed_font_or_one_warning(fonts, tmp_path, caplog):
    """With the fonts installed here: a CJK font if there is one, else one warning naming
    fonts-noto-cjk (old code: matplotlib's warnings, one per glyph per figure, and boxes)."""
    import warnings

    cjk = [family for family, path in fonts._candidates() if "猫" in fonts._coverage(path)]
    with caplog.at_level(logging.WARNING, logger="jaxcnn"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_confusion(np.eye(2), ["猫", "犬"], tmp_path / "a.png", "cats and dogs")
        plot_confusion(np.eye(2), ["猫", "犬"], tmp_path / "b.png", "again")
    assert not [w for w in caught if "missing from" in str(w.message)]
    messages = [r.getMessage() for r in caplog.records]
    if cjk:
        assert fonts.fallback_families(["猫"])[:1] == cjk[:1] and not messages
    else:
        assert len(messages) == 1 and "fonts-noto-cjk" in messages[0]
