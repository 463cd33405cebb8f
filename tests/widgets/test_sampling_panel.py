"""The sampling panel alone (pytest-qt, offscreen): the chain's order as a list, the newer
samplers' knobs, the logit bias and the DRY breakers, and what "values actually used" says."""

from __future__ import annotations

from PySide6.QtCore import Qt

from app.core.sampling import stage_names
from backends.base import SAMPLER_ORDER, SamplerSettings, samplers_from_string
from widgets.sampling_panel import SamplingPanel, describe_chain


def test_the_order_list_reorders_and_leaves_stages_out(qtbot):
    p = SamplingPanel()
    qtbot.addWidget(p)
    assert p.settings().samplers == SAMPLER_ORDER
    seen = []
    p.settingsChanged.connect(seen.append)
    # temperature first, then top-k: the buttons move the selected stage
    row = p.order().index("temperature")
    p.order_list.setCurrentRow(row)
    for _ in range(row):
        p.up_button.click()
    assert p.order()[0] == "temperature" and seen and seen[-1].samplers[0] == "temperature"
    # untick top-p: it no longer runs
    top_p = next(p.order_list.item(i) for i in range(p.order_list.count())
                 if p.order_list.item(i).data(Qt.UserRole) == "top_p")
    top_p.setCheckState(Qt.Unchecked)
    s = p.settings()
    assert "top_p" not in s.samplers and "top_p" not in stage_names(s)
    assert "order temperature;" in p.used_label.text() and "top-p" not in p.used_label.text()
    p.default_order_button.click()
    assert p.settings().samplers == SAMPLER_ORDER


def test_settings_round_trip_through_the_panel(qtbot):
    p = SamplingPanel()
    qtbot.addWidget(p)
    s = SamplerSettings(samplers=samplers_from_string("min_p;xtc;temperature;adaptive_p"), dry_multiplier=0.8,
                        dry_sequence_breakers=("\n", "::"), xtc_probability=0.5, mirostat=0,
                        adaptive_target=0.3, logit_bias=((15043, 1.0), ("Paris", float("-inf"))), top_n_sigma=2.0)
    p.set_settings(s)
    assert p.settings() == s
    assert p.breakers_edit.text() == "\\n|::" and p.bias_edit.text() == "15043+1, Paris-inf"
    text = p.used_label.text()
    assert text == describe_chain(s)
    assert "XTC(p 0.5" in text and "adaptive-p(target 0.3" in text and "logit bias (2)" in text
    assert text.index("min-p") < text.index("XTC") < text.index("temperature") < text.index("adaptive-p")


def test_mirostat_replaces_the_order_and_a_bad_bias_is_refused(qtbot):
    p = SamplingPanel()
    qtbot.addWidget(p)
    p._spins["mirostat"].setValue(2)
    text = p.used_label.text()
    assert "Mirostat v2(tau 5, eta 0.1; mu from 10)" in text and "order ignored" in text and "top-k" not in text
    p.bias_edit.setText("15043*2")
    p.bias_edit.editingFinished.emit()
    assert "Logit bias not used" in p.error_label.text() and p.settings().logit_bias == ()
    # every knob explains itself; a preset switches the newer samplers off again
    assert all(w.toolTip() for w in p._spins.values())
    p.preset.setCurrentText("Greedy")
    s = p.settings()
    assert s.mirostat == 0 and s.temperature == 0 and "greedy" in p.used_label.text()


def test_the_distribution_shows_what_the_stateful_stages_decided(qtbot):
    import numpy as np

    from app.core.sampling import apply_chain
    from widgets.distribution_plot import DistributionPlot

    logits = np.random.default_rng(1).normal(0, 2, 500).astype(np.float32)
    s = SamplerSettings(mirostat=2, mirostat_tau=4.0)
    r = apply_chain(logits, s)
    tok = int(r.ids[0])
    step = r.to_step(tok, index=0, position=3, text="x", piece="x", piece_of=str)
    plot = DistributionPlot()
    qtbot.addWidget(plot)
    plot.show_step(step)
    assert "mu 8.000 bits" in plot._info.text()
    nxt = apply_chain(logits, s, state=r.next_state(tok))
    assert nxt.stages[-1].value != 8.0  # mu moved after the token


def test_presets_import_export_and_the_models_own(qtbot, tmp_path, embedded_model):
    from app.core.presets import model_preset
    from backends.llama_engine import LlamaModel
    from tests.core.test_presets import KOBOLD
    from tests.gguf_factory import with_metadata

    p = SamplingPanel()
    qtbot.addWidget(p)
    p._spins["dry_multiplier"].setValue(0.8)
    p._set_order(("min_p", "dry", "temperature"))
    out = p.export_preset(str(tmp_path / "mine.json"))
    mine = p.settings()
    p.preset.setCurrentText("Greedy")
    got = p.import_preset(out)
    assert got.name == "mine" and p.settings() == mine and p.preset.currentText() == "mine"
    kobold = tmp_path / "kobold.json"
    kobold.write_text(__import__("json").dumps(KOBOLD))
    p.import_preset(str(kobold))
    assert p.settings().top_k == 100 and "top-a" in p.import_note.text() and p.preset.currentText() == "kobold"
    # a GGUF that recommends its settings (the embedded model with general.sampling.* keys added)
    path = tmp_path / "recommending.gguf"
    with_metadata(embedded_model, path, {"general.sampling.temp": 0.6, "general.sampling.top_k": 20,
                                         "general.sampling.sequence": "top_k;top_p;min_p;temp"})
    model = LlamaModel(path)
    try:
        info = model.info
    finally:
        model.close()
    assert dict(info.sampling)["general.sampling.top_k"] == "20"
    found = model_preset(info)
    assert found is not None
    p.set_model_preset(found)
    assert p.preset.findText(found.name) >= 0
    p.preset.setCurrentText(found.name)
    s = p.settings()
    assert s.top_k == 20 and abs(s.temperature - 0.6) < 1e-6 and s.samplers == ("top_k", "top_p", "min_p", "temperature")
    p.set_model_preset(None)
    assert p.preset.findText(found.name) < 0
