"""Sampler presets: ours round-trip, other tools' preset files map field by field (and say what
they ignore), a model's own general.sampling.* keys become a preset named after it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from app.core.presets import PresetError, model_preset, preset_json, read_preset
from backends.base import SAMPLER_ORDER, ModelInfo, SamplerSettings

#: shaped like SillyTavern's text-completion presets (e.g. its "Universal-Light")
SILLYTAVERN = {
    "temp": 1.25, "temperature_last": True, "top_p": 1, "top_k": 0, "top_a": 0, "tfs": 1, "epsilon_cutoff": 0,
    "eta_cutoff": 0, "typical_p": 1, "min_p": 0.1, "rep_pen": 1.05, "rep_pen_range": 512, "freq_pen": 0,
    "presence_pen": 0.1, "dynatemp": False, "min_temp": 0, "max_temp": 2, "dynatemp_exponent": 1,
    "smoothing_factor": 0, "mirostat_mode": 0, "mirostat_tau": 5, "mirostat_eta": 0.1, "genamt": 350,
    "sampler_order": [6, 0, 1, 3, 4, 2, 5], "dry_multiplier": 0.8, "dry_base": 1.75, "dry_allowed_length": 2,
    "dry_sequence_breakers": "[\"\\n\", \":\", \"\\\"\", \"*\"]", "xtc_threshold": 0.1, "xtc_probability": 0,
    "samplers": ["dry", "top_k", "tfs_z", "typical_p", "top_p", "min_p", "xtc", "temperature"],
}
#: shaped like a KoboldCpp preset / generate payload
KOBOLD = {"temperature": 0.7, "rep_pen": 1.1, "rep_pen_range": 320, "top_p": 0.92, "top_k": 100, "top_a": 0,
          "typical": 1, "tfs": 1, "min_p": 0.02, "sampler_order": [6, 0, 1, 3, 4, 2, 5], "max_length": 200,
          "dynatemp_range": 0.5, "dynatemp_exponent": 1, "mirostat": 0, "smoothing_factor": 0}
#: text-generation-webui's user_data/presets/*.yaml
TEXTGEN = """temperature: 1.5
min_p: 0.05
repetition_penalty: 1.05
dynamic_temperature: true
dynatemp_low: 0.5
dynatemp_high: 1.5
dry_multiplier: 0.8
dry_sequence_breakers: '"\\n", ":", "\\"", "*"'
top_a: 0.2
sampler_priority:
  - repetition_penalty
  - dry
  - top_k
  - min_p
  - temperature
  - tfs
"""


def test_our_presets_round_trip():
    s = SamplerSettings(temperature=0.6, dry_multiplier=0.8, samplers=("min_p", "temperature"), mirostat=2,
                        logit_bias=((3, float("-inf")),), dry_sequence_breakers=("\n",))
    got = read_preset(preset_json("Mine", s), file_name="mine.json")
    assert got.name == "Mine" and got.settings == s and got.source == "Samplescope preset" and not got.ignored


def test_a_sillytavern_preset_maps_field_by_field():
    got = read_preset(json.dumps(SILLYTAVERN), file_name="Universal-Light.json")
    s = got.settings
    assert got.source == "SillyTavern preset" and got.name == "Universal-Light"
    assert (s.temperature, s.top_k, s.min_p, s.repeat_penalty, s.penalty_last_n, s.presence_penalty) == \
        (1.25, 0, 0.1, 1.05, 512, 0.1)
    assert s.max_tokens == 350 and s.dry_multiplier == 0.8 and s.dry_sequence_breakers == ("\n", ":", '"', "*")
    # "samplers" (its llama.cpp order) wins; temperature_last puts temperature at the end; the rest
    # of llama.cpp's stages sit at their default places
    assert s.samplers[-1] == "temperature" and s.samplers.index("dry") < s.samplers.index("top_k")
    assert set(s.samplers) == set(SAMPLER_ORDER)
    ignored = " ".join(got.ignored)
    for name in ("top_a", "tfs", "epsilon_cutoff", "smoothing_factor", "tfs_z"):
        assert name in ignored
    assert "min_temp: dynamic temperature is off" in got.ignored and s.dynatemp_range == 0
    assert "temp -> temperature" in got.mapped and "rep_pen -> repeat_penalty" in got.mapped
    assert "taken" in got.report() and "Ignored:" in got.report()


def test_a_koboldcpp_preset_takes_its_sampler_order():
    got = read_preset(json.dumps(KOBOLD), file_name="kobold.json")
    s = got.settings
    assert got.source == "KoboldCpp preset"
    assert (s.temperature, s.repeat_penalty, s.penalty_last_n, s.top_p, s.top_k, s.min_p, s.max_tokens) == \
        (0.7, 1.1, 320, 0.92, 100, 0.02, 200)
    assert s.dynatemp_range == 0.5
    named = [st for st in s.samplers if st in ("penalties", "top_k", "typical", "top_p", "temperature")]
    assert named == ["penalties", "top_k", "typical", "top_p", "temperature"]  # 6, 0, 3, 4, 5
    assert set(s.samplers) == set(SAMPLER_ORDER)
    assert any("sampler_order 1 (top-a)" in x for x in got.ignored)
    assert any("sampler_order 2 (tail-free sampling)" in x for x in got.ignored)


def test_a_text_generation_webui_yaml_preset():
    got = read_preset(TEXTGEN, file_name="Creative.yaml")
    s = got.settings
    assert got.source == "text-generation-webui preset" and got.name == "Creative"
    assert s.temperature == pytest.approx(1.0) and s.dynatemp_range == pytest.approx(0.5)  # 0.5..1.5
    assert s.min_p == 0.05 and s.repeat_penalty == 1.05 and s.dry_multiplier == 0.8
    assert s.dry_sequence_breakers == ("\n", ":", '"', "*")
    order = s.samplers
    assert order.index("penalties") < order.index("dry") < order.index("top_k") < order.index("min_p") \
        < order.index("temperature")
    assert any("tfs" in x for x in got.ignored) and any("top_a" in x for x in got.ignored)


@pytest.mark.parametrize("text, message", [
    ("{not json", "is not 'key: value'"),
    ("[1, 2]", "no preset"),
    (json.dumps({"temp": 9, "rep_pen": 1}), "temperature"),
    (json.dumps({"banana": 1}), "no field"),
    (json.dumps({"samplescope_preset": 99, "settings": {}}), "newer Samplescope"),
])
def test_a_preset_that_cannot_be_read_says_why(text, message):
    with pytest.raises(PresetError, match=message):
        read_preset(text)


def _info(sampling) -> ModelInfo:
    return ModelInfo(path="m.gguf", name="Tiny 1B", architecture="llama", size_label="1B", quantization="Q4",
                     n_vocab=10, n_ctx_train=100, n_layers=2, file_size=1, has_chat_template=False,
                     sampling=tuple(sampling))


def test_a_models_own_recommended_settings():
    assert model_preset(_info(())) is None
    got = model_preset(_info([("general.sampling.temp", "0.6"), ("general.sampling.top_k", "20"),
                              ("general.sampling.top_p", "0.95"), ("general.sampling.sequence", "top_k;top_p;temp"),
                              ("general.sampling.mirostat", "0"), ("general.sampling.unknown", "1")]))
    assert got is not None and got.name == "Tiny 1B (model's own)"
    s = got.settings
    assert (s.temperature, s.top_k, s.top_p, s.samplers) == (0.6, 20, 0.95, ("top_k", "top_p", "temperature"))
    assert got.ignored == ("general.sampling.unknown: not a key llama.cpp reads",)
    assert dataclasses.replace(s, temperature=0.8, top_k=40, top_p=0.95, samplers=SAMPLER_ORDER) == SamplerSettings()
