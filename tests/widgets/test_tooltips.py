"""Every control of the window explains itself (issue 15, item 6): each button, check box, radio
button, spin box, combo box, line edit and slider of every tab and dock, shown or hidden, has a
tooltip, and each menu entry a status tip or a tooltip of its own. Qt's own parts of a widget
(scroll bars, a tab bar's scroll arrows, a spin box's or combo box's line edit, anything named
``qt_...``) are not controls of ours and are left out. The model picker, which the window opens
on demand, is checked on its own (with a search that finds nothing)."""

from __future__ import annotations

from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QDockWidget,
    QGroupBox,
    QLineEdit,
    QMenu,
    QScrollBar,
    QTabBar,
    QWidget,
)

from widgets.model_picker import ModelPickerDialog

CONTROLS = (QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QAbstractSlider)


def _is_qt_internal(w: QWidget) -> bool:
    parent = w.parent()
    return (w.objectName().startswith("qt_")
            or isinstance(w, QScrollBar)
            or isinstance(parent, (QTabBar, QAbstractSpinBox, QComboBox)))  # scroll arrows, inner line edits


def _text(w: QWidget) -> str:
    if isinstance(w, QAbstractButton):
        return w.text()
    if isinstance(w, QLineEdit):
        return w.text() or w.placeholderText()
    if isinstance(w, QComboBox):
        return w.currentText()
    if isinstance(w, QAbstractSpinBox):
        return w.text()
    if isinstance(w, QAbstractSlider):
        return str(w.value())
    return ""


def _name(obj) -> str:
    out = type(obj).__name__
    if obj.objectName():
        out += "#" + obj.objectName()
    if isinstance(obj, QGroupBox) and obj.title():
        out += f"[{obj.title()!r}]"
    elif isinstance(obj, QDockWidget):
        out += f"[{obj.windowTitle()!r}]"
    return out


def _attribute(w: QWidget) -> str:
    """``Owner.attr`` for the nearest ancestor that keeps ``w`` in an attribute, else ''."""
    p = w.parent()
    while p is not None:
        for key, value in getattr(p, "__dict__", {}).items():
            if value is w:
                return f"{type(p).__name__}.{key}"
        p = p.parent()
    return ""


def _describe(w: QWidget) -> str:
    chain = []
    p = w.parent()
    while p is not None:
        chain.append(_name(p))
        p = p.parent()
    where = _attribute(w)
    return (f"{type(w).__name__} {_text(w)!r}" + (f" ({where})" if where else "")
            + " in " + " < ".join(chain))


def controls_without_tooltip(root: QWidget) -> list[str]:
    seen: set[int] = set()
    missing = []
    for kind in CONTROLS:
        for w in root.findChildren(kind):
            if id(w) in seen or _is_qt_internal(w):
                continue
            seen.add(id(w))
            if not w.toolTip().strip():
                missing.append(_describe(w))
    return missing


def _bare(text: str) -> str:
    """An action's text as Qt turns it into the tooltip it shows when none was set."""
    return text.replace("&", "").replace("...", "").replace("…", "").strip()


def _has_own_tip(act: QAction) -> bool:
    tip = act.toolTip().strip()
    return bool(act.statusTip().strip()) or (bool(tip) and _bare(tip) != _bare(act.text()))


def menu_actions_without_tip(menus: list[QMenu]) -> list[str]:
    missing = []

    def walk(menu: QMenu, path: list[str]) -> None:
        for act in menu.actions():
            if act.isSeparator():
                continue
            if act.menu() is not None:  # a submenu holder: its entries are checked instead
                walk(act.menu(), path + [_bare(act.text())])
                continue
            if not _has_own_tip(act):
                missing.append(" > ".join(path + [_bare(act.text())]))

    for m in menus:
        walk(m, [_bare(m.title())])
    return missing


def test_every_control_of_the_window_has_a_tooltip(window):
    labs = list(window.lab_panels.values())  # every lab tab, built (they are built when first opened)
    found = [w for kind in CONTROLS for w in window.findChildren(kind)]
    # the hidden docks and lab tabs are in there too
    assert window.guess_dock.isHidden() and any(window.guess_dock.isAncestorOf(w) for w in found)
    assert all(any(lab.isAncestorOf(w) for w in found) for lab in labs)
    assert len(found) > 100
    missing = controls_without_tooltip(window)
    assert not missing, f"{len(missing)} control(s) without a tooltip:\n" + "\n".join(missing)


def test_every_menu_entry_has_a_status_tip_or_tooltip(window):
    menus = [a.menu() for a in window.menuBar().actions() if a.menu() is not None]
    assert {_bare(m.title()) for m in menus} >= {"File", "Run", "View", "Help"}
    missing = menu_actions_without_tip(menus)
    assert not missing, f"{len(missing)} menu entr(y/ies) without a status tip or tooltip:\n" + "\n".join(missing)


def test_the_model_picker_controls_have_tooltips(qtbot):
    dlg = ModelPickerDialog([], scan=lambda folders, cancel: iter(()))
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitUntil(lambda: not dlg.searching, timeout=10_000)
    assert dlg.findChildren(QAbstractButton)
    missing = controls_without_tooltip(dlg)
    assert not missing, f"{len(missing)} control(s) without a tooltip:\n" + "\n".join(missing)


def test_the_check_names_what_it_misses(qtbot):
    """The checks can fail, and say where: a bare button and a bare menu entry are reported."""
    from PySide6.QtWidgets import QPushButton, QVBoxLayout

    host = QGroupBox("Knobs")
    qtbot.addWidget(host)
    lay = QVBoxLayout(host)
    bare = QPushButton("Frobnicate")
    lay.addWidget(bare)
    tipped = QPushButton("Explained")
    tipped.setToolTip("Does a thing")
    lay.addWidget(tipped)
    assert controls_without_tooltip(host) == ["QPushButton 'Frobnicate' in QGroupBox['Knobs']"]
    menu = QMenu("&Tools")
    menu.addAction("&Bare…")
    menu.addAction("Echo").setToolTip("Echo")  # a tooltip that repeats the text explains nothing
    menu.addAction("Told").setStatusTip("Says what it does")
    menu.addSeparator()
    sub = menu.addMenu("Sub")
    sub.addAction("Inner")
    assert menu_actions_without_tip([menu]) == ["Tools > Bare", "Tools > Echo", "Tools > Sub > Inner"]
