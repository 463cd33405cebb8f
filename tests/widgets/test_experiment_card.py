"""The experiment card and the hint bar alone: plain text, the variants' buttons, and fonts that
follow the application's (presentation mode makes it larger)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QApplication

from widgets.experiment_card import ExperimentCard
from widgets.hint_bar import HintBar


def test_the_card_shows_plain_text_and_one_button_per_variant(qtbot):
    card = ExperimentCard()
    qtbot.addWidget(card)
    asked = []
    card.variantRequested.connect(asked.append)
    card.show_experiment("<b>Title</b>", "First <i>sentence</i>. Second.", "", ["A & B", "C"])
    assert card.texts() == {"title": "Experiment: <b>Title</b>", "explanation": "First <i>sentence</i>. Second.",
                            "try": ""}
    assert card.try_label.isHidden()
    assert all(lab.textFormat() == Qt.PlainText for lab in (card.title_label, card.explanation_label, card.try_label))
    buttons = card.variant_buttons()
    assert [b.text() for b in buttons] == ["A && B", "C"] and all(b.toolTip() for b in buttons)
    buttons[1].click()
    assert asked == [1] and buttons[1].isChecked()
    card.set_variant(None)
    assert not any(b.isChecked() for b in buttons)
    card.show_experiment("Other", "x. y.", "Look here.", [])  # the old buttons go
    assert card.variant_buttons() == [] and card.texts()["try"] == "Try: Look here."


def test_the_texts_follow_the_application_font(qtbot):
    app = QApplication.instance()
    card, hint = ExperimentCard(), HintBar()
    for w in (card, hint):
        qtbot.addWidget(w)
        w.show()
    card.show_experiment("Title", "One. Two.", "Three.", ["V"])
    hint.show_hint("Hint.")
    before = QFont(app.font())
    try:
        bigger = QFont(before)
        bigger.setPointSizeF(before.pointSizeF() * 2)
        app.setFont(bigger)
        QApplication.sendPostedEvents(None, 0)
        for label in (card.title_label, card.explanation_label, card.try_label, hint.label):
            assert label.font().pointSizeF() == bigger.pointSizeF()
        assert card.title_label.font().bold() and card.try_label.font().italic()
        assert not card.explanation_label.font().bold()
    finally:
        app.setFont(before)
        QApplication.sendPostedEvents(None, 0)
    assert card.explanation_label.font().pointSizeF() == before.pointSizeF()


def test_the_hint_bar_dismisses_with_either_button(qtbot):
    hint = HintBar()
    qtbot.addWidget(hint)
    for button in (hint.ok_button, hint.close_button):
        hint.show_hint("Try this.")
        assert hint.text() == "Try this."
        with qtbot.waitSignal(hint.dismissed, timeout=1000):
            button.click()
        assert hint.isHidden() and hint.text() == ""
