"""The window's model and server handling: loading a GGUF file (dialog, drop, recent files),
the model picker's added folders (saved as they change), the parallel-sequences setting, testing
and connecting to a server, keys to the keyring, load progress and the model card.

Owns: ``ModelMixin``, a part of ``MainWindow`` (the controller does the work on its worker).
GUI thread."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QFileDialog

from app.core.presets import model_preset
from backends.base import ModelInfo
from widgets.formatting import menu_text, plain_tip
from widgets.model_panel import show_progress

__all__ = ["ModelMixin"]


class ModelMixin:
    """The model and server part of ``MainWindow`` (see the module docstring)."""

    def _load(self, path: str | None, *, n_ctx: int | None = None, n_gpu: int | None = None,
              n_threads: int | None = None) -> None:
        mp = self.model_panel
        self.hide_banner()
        self._loading_path = path
        self.controller.load_model(
            path,
            n_ctx=n_ctx if n_ctx is not None else mp.n_ctx.value(),
            n_gpu_layers=n_gpu if n_gpu is not None else mp.n_gpu.value(),
            n_threads=n_threads if n_threads is not None else mp.n_threads.value(),
        )

    def _set_parallel(self, n: int) -> None:
        """The labs' parallel sequences (0 = automatic: 8 locally, 4 to a server)."""
        self.controller.max_parallel = int(n) or 8
        self.controller.max_parallel_remote = int(n) or 4

    def run_when_ready(self) -> None:
        """Generate (or take the first step in step mode) once the first model has loaded."""

        def go(_info) -> None:
            self.controller.modelLoaded.disconnect(go)
            QTimer.singleShot(0, self.generate)

        self.controller.modelLoaded.connect(go)

    def load_path(self, path: str) -> None:
        """Load a GGUF file given by the user (menu, drop, recent list)."""
        self.model_panel.select_path(path)
        self._load(path)

    def open_model_dialog(self) -> None:
        start = os.path.dirname(self.app_settings.recent_models[0]) if self.app_settings.recent_models else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Open GGUF model", start, "GGUF models (*.gguf);;All files (*)")
        if path:
            self.load_path(path)

    def _test_remote(self, config) -> None:
        self.connection_panel.show_status(f"Testing {config.base_url}…")
        self.controller.test_remote(config)

    def _connect_remote(self, config) -> None:
        self.connection_panel.show_status(f"Connecting to {config.base_url}…")
        self.controller.connect_remote(config)

    def _save_key(self, entry: str, key: str) -> None:
        from backends.secrets import keyring_available, store_in_keyring

        ok, reason = keyring_available()
        if not ok:
            self.connection_panel.show_status(f"No system keyring here: {reason} Use an environment variable.",
                                              error=True)
            return
        try:
            store_in_keyring(entry, key)
        except Exception as exc:  # noqa: BLE001 - the keyring backend's own errors
            self.connection_panel.show_status(f"The keyring refused the key: {type(exc).__name__}", error=True)
            return
        self.connection_panel.show_status(f"Key stored in the system keyring as '{entry}'.")

    def _on_remote_tested(self, models, caps) -> None:
        self.connection_panel.set_models(list(models))
        self.connection_panel.show_capabilities(caps)
        self.connection_panel.show_status(f"Server answered: {len(models)} model(s).")

    def _on_remote_connected(self, caps) -> None:
        cfg = self.controller.remote_config
        self.connection_panel.show_status(f"Connected: {self.controller.model_info.name} at {cfg.base_url}.")
        reasons = {n: "remote servers do not take this setting" for n in
                   ("typical_p", "repeat_penalty", "penalty_last_n", "min_keep")}
        for n in ("top_n_sigma", "xtc_probability", "xtc_threshold", "dynatemp_range", "dynatemp_exponent",
                  "dry_multiplier", "dry_base", "dry_allowed_length", "dry_penalty_last_n", "mirostat",
                  "mirostat_tau", "mirostat_eta", "adaptive_target", "adaptive_decay"):
            reasons[n] = "not sent to remote servers yet (the server's own chain samples there)"
        for knob in ("top_k", "min_p", "seed"):
            if not getattr(caps, knob, False):
                reasons[knob] = f"this server ignores {knob} (found by the capability probe)"
        if not getattr(caps, "top_n_max", 0):
            reasons["top_n"] = "this server returns no log-probabilities"
        self.sampling_panel.set_unsupported(reasons)
        self.distribution_plot.set_stage_note(
            "Disabled: the stage view " + self.controller.capabilities.why_not("sampler_stages") + "."
        )
        self.prompt_stack.setCurrentWidget(self.chat_editor if cfg.chat else self.prompt_edit)
        self.step_mode_action.setChecked(False)

    def _on_wait(self, seconds: float, reason: str) -> None:
        self.statusBar().showMessage(f"{reason} — retrying in {seconds:.0f} s", 1500)

    def _show_load_progress(self, done: int, total: int, what: str) -> None:
        show_progress(self.status_progress, done, total, what)

    def _on_model_loaded(self, info: ModelInfo) -> None:
        self._on_state(self.controller.state)  # enable the local- or remote-only controls
        if self.controller.remote is not None:
            self.setWindowTitle(f"Samplescope — {info.name} (remote)")
            self.sampling_panel.set_model_preset(None)
            return
        self.sampling_panel.set_model_preset(model_preset(info))  # the GGUF's general.sampling.* keys
        self.sampling_panel.set_unsupported({})
        self.distribution_plot.set_stage_note("")
        self.prompt_stack.setCurrentWidget(self.prompt_edit)
        self.connection_panel.show_status("Not connected: using the local model.")
        self.model_panel.show_model(info)
        path = getattr(self, "_loading_path", None)
        if path:
            self.app_settings.add_recent(path)
            self._update_recent()
            self.model_panel.select_path(path)
        self.app_settings.last_model_path = path
        self.setWindowTitle(f"Samplescope — {info.name}")

    def _save_model_folders(self, folders: list[str]) -> None:
        """The model picker's added folders changed: keep them in the settings and save at once."""
        self.app_settings.model_folders = list(folders)
        try:
            self.app_settings.save()
        except OSError as exc:
            self.statusBar().showMessage(f"The model folders were not saved: {exc.strerror or exc}", 5000)

    def _update_recent(self) -> None:
        """Give the model panel and File > Recent what the settings remember: the recent models and
        the model picker's folders."""
        recent = list(self.app_settings.recent_models)
        self.model_panel.set_recent(recent, getattr(self, "_loading_path", None))
        self.model_panel.set_model_folders(list(self.app_settings.model_folders), self._save_model_folders)
        self.recent_menu.clear()
        for p in recent:
            act = self.recent_menu.addAction(menu_text(os.path.basename(p)))
            act.setToolTip(plain_tip(p))
            act.triggered.connect(lambda _=False, path=p: self.load_path(path))
        self.recent_menu.setEnabled(bool(recent))
