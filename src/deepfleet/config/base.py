"""The base of every fleet.yaml section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, so typos never pass silently, and
    assignments are validated like loaded values."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
