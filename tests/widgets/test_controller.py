"""The controller on its worker thread: first-start assembly progress and error handling."""

from __future__ import annotations

from app.controller import WorkbenchController


def test_first_start_assembles_the_embedded_model_with_progress(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPLESCOPE_CACHE_DIR", str(tmp_path))  # a fresh machine: nothing assembled
    c = WorkbenchController(store=None)
    progress = []
    c.loadProgress.connect(lambda d, t, w: progress.append((d, t, w)))
    states = []
    c.stateChanged.connect(states.append)
    try:
        with qtbot.waitSignal(c.modelLoaded, timeout=120_000) as blocker:
            c.load_model(None, n_ctx=512, n_threads=2)
        assert blocker.args[0].n_vocab == 262144
        sized = [p for p in progress if p[1] > 0]
        assert sized and sized[-1][0] == sized[-1][1]  # reached 100%
        assert len(sized) >= 5  # reported along the way, not once at the end
        assert "Assembling" in sized[0][2]
        assert states[0] == "loading" and c.state == "ready"
    finally:
        c.shutdown()


def test_generate_without_a_model_says_what_to_do(qtbot):
    from backends.base import SamplerSettings

    c = WorkbenchController(store=None)
    try:
        with qtbot.waitSignal(c.errorOccurred) as blocker:
            assert c.generate("hello", SamplerSettings()) is None
        assert "Load a model" in blocker.args[1]
    finally:
        c.shutdown()
