"""The model picker (widgets/model_picker.py): it lists what discovery finds in fake layouts (HOME and
every model variable pointed into tmp_path), runs the search off the GUI thread, shows file names as
plain text, remembers added folders, and a chosen model is loaded as File > Open loads one."""

from __future__ import annotations

import os

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractButton, QAbstractItemView, QHeaderView, QLabel

from tests.backends.test_discovery import home, make_hf_repo, model, put  # noqa: F401 - the fixture
from tests.widgets.test_markup import RAW, check_no_markup_read
from widgets.model_panel import ModelPanel
from widgets.model_picker import COLUMNS, ModelPickerDialog


def _row_texts(dlg: ModelPickerDialog) -> dict[str, list[str]]:
    t = dlg.table
    out = {}
    for r in range(t.rowCount()):
        out[t.item(r, 0).text()] = [t.item(r, c).text() if t.item(r, c) else "" for c in range(t.columnCount())]
    return out


def _open(qtbot, folders, **kw) -> ModelPickerDialog:
    dlg = ModelPickerDialog([str(f) for f in folders], **kw)
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitUntil(lambda: not dlg.searching, timeout=10_000)
    return dlg


def test_lists_the_fake_files_and_chooses_one(qtbot, home, tmp_path, monkeypatch):  # noqa: F811
    folder = tmp_path / "mine"
    good = put(folder / "Good-1B-Q4_K_M.gguf", model("llama", ftype=15, ctx=4096, size_label="1B"))
    put(folder / "broken.gguf", b"not a model at all")
    make_hf_repo(tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    dlg = _open(qtbot, [folder])
    assert [dlg.table.horizontalHeaderItem(i).text() for i in range(len(COLUMNS))] == list(COLUMNS)
    rows = _row_texts(dlg)
    assert set(rows) == {"Good-1B-Q4_K_M.gguf", "broken.gguf", "org/tiny-GGUF/tiny-Q4_K_M.gguf",
                         "org/tiny-GGUF/old-Q8_0.gguf", "org/tiny-GGUF/gone.gguf"}
    found = dlg.model_at(dlg.row_of(str(good)))
    assert found is not None and found.file_size == good.stat().st_size
    assert rows["Good-1B-Q4_K_M.gguf"][1:] == ["added folder", "llama", "1B", "Q4_K_M", found.file_size_text, "4,096"]
    assert rows["org/tiny-GGUF/tiny-Q4_K_M.gguf"][1:5] == ["Hugging Face", "qwen2", "0.5B", "Q4_K_M"]
    assert rows["broken.gguf"][2].startswith("Cannot be used: broken.gguf is not a GGUF model")
    assert "5 model(s) found, 2 of them cannot be used" in dlg.status.text()

    # an unusable row cannot be loaded; a usable one can, by the Load button or a double-click
    dlg.table.selectRow(dlg.row_of(str(folder / "broken.gguf")))
    assert not dlg.load_button.isEnabled() and "cannot be used" in dlg.load_button.toolTip()
    dlg.table.selectRow(dlg.row_of(str(good)))
    assert dlg.load_button.isEnabled()
    with qtbot.waitSignal(dlg.modelChosen, timeout=2000) as chosen:
        qtbot.mouseClick(dlg.load_button, Qt.LeftButton)
    assert chosen.args == [str(good)]
    assert not dlg.isVisible() and dlg._worker is None  # closed, its search thread stopped


def test_sizes_are_shown_as_the_model_card_writes_them(qtbot, home, tmp_path):  # noqa: F811
    folder = tmp_path / "mine"
    good = put(folder / "Good.gguf", model(elements=300_000))
    dlg = _open(qtbot, [folder])
    row = dlg.row_of(str(good))
    assert dlg.table.item(row, 5).text() == f"{good.stat().st_size / 1e6:.1f} MB"


def test_double_click_chooses_and_added_folders_are_searched_and_reported(qtbot, home, tmp_path):  # noqa: F811
    first, second = tmp_path / "one", tmp_path / "two"
    put(first / "a.gguf", model())
    b = put(second / "deeper" / "b.gguf", model("gemma3", ftype=7, ctx=32768))
    dlg = _open(qtbot, [first])
    assert set(_row_texts(dlg)) == {"a.gguf"}
    with qtbot.waitSignal(dlg.foldersChanged, timeout=2000) as changed:
        assert dlg.add_folder(str(second))
    assert changed.args == [[str(first), str(second)]]
    assert not dlg.add_folder(str(second))  # once
    qtbot.waitUntil(lambda: not dlg.searching and len(dlg.models) == 2, timeout=10_000)
    assert set(_row_texts(dlg)) == {"a.gguf", "deeper/b.gguf"}
    assert [dlg.folder_list.item(i).text() for i in range(dlg.folder_list.count())] == [str(first), str(second)]
    dlg.folder_list.setCurrentRow(0)
    assert dlg.remove_button.isEnabled()
    with qtbot.waitSignal(dlg.foldersChanged, timeout=2000) as changed:
        qtbot.mouseClick(dlg.remove_button, Qt.LeftButton)
    assert changed.args == [[str(second)]]
    qtbot.waitUntil(lambda: not dlg.searching, timeout=10_000)
    assert set(_row_texts(dlg)) == {"deeper/b.gguf"}
    row = dlg.row_of(str(b))
    with qtbot.waitSignal(dlg.modelChosen, timeout=2000) as chosen:
        rect = dlg.table.visualItemRect(dlg.table.item(row, 0))
        qtbot.mouseClick(dlg.table.viewport(), Qt.LeftButton, pos=rect.center())  # a double-click: press,
        qtbot.mouseDClick(dlg.table.viewport(), Qt.LeftButton, pos=rect.center())  # release, then the second
    assert chosen.args == [str(b)]


def test_the_search_runs_off_the_gui_thread(qtbot, home, tmp_path):  # noqa: F811
    import threading

    put(tmp_path / "m" / "a.gguf", model())
    threads = []

    def scan(folders, cancel):
        from backends.discovery import iter_models

        threads.append(threading.current_thread())
        yield from iter_models(folders, cancel=cancel)

    dlg = _open(qtbot, [tmp_path / "m"], scan=scan)
    assert len(dlg.models) == 1
    assert threads and threads[0] is not threading.main_thread()


def test_names_are_plain_text_and_every_control_has_a_tooltip(qtbot, home, tmp_path):  # noqa: F811
    folder = tmp_path / "<u>mk1<" / "u>"  # a path holding RAW, "<u>mk1</u>"
    put(folder / "m.gguf", model())
    put(folder / "bad.gguf", b"junk")
    dlg = _open(qtbot, [tmp_path])
    assert any(RAW in m.name for m in dlg.models)
    assert check_no_markup_read(dlg) == []
    controls = [w for w in dlg.findChildren(QAbstractButton) + dlg.findChildren(QAbstractItemView)
                if not w.objectName().startswith("qt_") and not isinstance(w, QHeaderView)]  # not Qt's own parts
    assert len(controls) >= 7
    for w in controls:
        assert w.toolTip(), w
    for i in range(dlg.table.columnCount()):  # the header's sections say what each column is
        assert dlg.table.horizontalHeaderItem(i).toolTip()
    for label in dlg.findChildren(QLabel):
        assert label.textFormat() == Qt.PlainText


def test_nothing_found_says_what_to_do(qtbot, home):  # noqa: F811
    dlg = _open(qtbot, [])
    assert dlg.table.rowCount() == 0
    assert "0 model(s) found" in dlg.status.text() and "Add a folder" in dlg.status.text()
    assert "huggingface" in dlg.status.toolTip()


def test_the_model_panel_opens_the_picker_saves_folders_and_loads_the_choice(qtbot, home, tmp_path):  # noqa: F811
    folder = tmp_path / "mine"
    good = put(folder / "Good.gguf", model())
    saved: list[list[str]] = []
    panel = ModelPanel()
    qtbot.addWidget(panel)
    panel.set_model_folders([str(folder)], saved.append)
    assert panel.picker_button.toolTip()
    qtbot.mouseClick(panel.picker_button, Qt.LeftButton)
    dlg = panel.picker
    assert isinstance(dlg, ModelPickerDialog) and dlg.folders == [str(folder)]
    qtbot.waitUntil(lambda: not dlg.searching, timeout=10_000)
    dlg.add_folder(str(tmp_path / "more"))
    assert saved == [[str(folder), str(tmp_path / "more")]]
    qtbot.waitUntil(lambda: not dlg.searching, timeout=10_000)
    with qtbot.waitSignal(panel.loadRequested, timeout=2000) as load:
        dlg.table.selectRow(dlg.row_of(str(good)))
        qtbot.mouseClick(dlg.load_button, Qt.LeftButton)
    assert load.args == [str(good), panel.n_ctx.value(), panel.n_gpu.value(), panel.n_threads.value()]
    assert panel.selected_path() == str(good) and panel.picker is None
    assert os.path.basename(str(good)) == panel.model_combo.currentText()


def test_the_window_loads_the_chosen_model_and_saves_the_folder(window, qtbot, home, tmp_path):  # noqa: F811
    from app.core.settings import AppSettings, settings_path

    c = window.controller
    embedded = c.model_info.path
    folder = tmp_path / "classroom models"
    folder.mkdir()
    link = folder / "linked-gemma.gguf"
    link.symlink_to(embedded)
    try:
        window.models_on_disk_action.trigger()  # File > Models on disk… opens the same picker
        menu_dlg = window.model_panel.picker
        assert menu_dlg is not None and menu_dlg.isVisible()
        menu_dlg.reject()
        assert window.model_panel.picker is None
        qtbot.mouseClick(window.model_panel.picker_button, Qt.LeftButton)
        dlg = window.model_panel.picker
        qtbot.waitUntil(lambda: not dlg.searching, timeout=10_000)
        assert dlg.table.rowCount() == 0  # nothing anywhere yet
        dlg.add_folder(str(folder))
        assert window.app_settings.model_folders == [str(folder)]
        assert AppSettings.load(settings_path()).model_folders == [str(folder)]  # saved at once
        qtbot.waitUntil(lambda: not dlg.searching and dlg.table.rowCount() == 1, timeout=10_000)
        (m,) = dlg.models
        assert (m.name, m.architecture, m.quantization, m.size_label) == ("linked-gemma.gguf", "gemma3", "Q4_K_M",
                                                                          "270M")
        dlg.table.selectRow(0)
        qtbot.mouseClick(dlg.load_button, Qt.LeftButton)
        qtbot.waitUntil(lambda: c.model_info.path == str(link) and c.state == "ready", timeout=60_000)
        assert window.app_settings.recent_models[0] == str(link)  # as a model opened with File > Open
        assert window.model_panel.selected_path() == str(link)
    finally:
        window._save_model_folders([])
        window.app_settings.remove_recent(str(link))
        window._update_recent()
        if c.model_info.path != embedded:
            window._load(None)
            qtbot.waitUntil(lambda: c.model_info.path == embedded and c.state == "ready", timeout=60_000)
