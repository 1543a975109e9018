"""Where each model of a config is loaded from, preparing the bundled one when needed.

A local folder is passed to the engine as an absolute path, a hub id as is (the engine
downloads it), and the bundled model is converted once into the cache (about 30 s).
"""

from __future__ import annotations

import time
from pathlib import Path

from deepfleet.catalog import bundled
from deepfleet.config import FleetConfig
from deepfleet.fleet.events import EventSink, ModelPrepared, PreparingModel, ignore


def prepare_bundled(force: bool = False, on_event: EventSink = ignore) -> bundled.BundledModel:
    """The bundled model's folder, converted first when it is missing or incomplete (or
    `force`), reporting each step. Raises bundled.BundledModelError with the fix."""
    if not force and bundled.is_intact(bundled.default_target()):
        return bundled.BundledModel(bundled.default_target())
    started = time.monotonic()
    on_event(PreparingModel("", 0.0))

    def step(text: str) -> None:
        on_event(PreparingModel(text, time.monotonic() - started))

    model = bundled.prepare(force=force, on_step=step)
    on_event(ModelPrepared(model.path, time.monotonic() - started))
    return model


def model_paths(cfg: FleetConfig, on_event: EventSink = ignore) -> dict[str, str]:
    """Model name -> what its engine loads: an absolute folder or a hub id."""
    paths: dict[str, str] = {}
    for m in cfg.models:
        if m.is_bundled:
            paths[m.name] = str(prepare_bundled(on_event=on_event).path)
        elif m.is_local_path:
            paths[m.name] = str(Path(m.source).expanduser().resolve())
        else:
            paths[m.name] = m.source
    return paths
