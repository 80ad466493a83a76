"""The `notify:` section of a study file: where a message goes when the study ends, fails or is
stopped, and when a variant's repeats finish. Plain settings; `pipelines.sweep.notify` sends."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class NotifySettings(BaseModel):
    """`notify: [URL, ...]` (Apprise URLs: `mailto://`, `slack://`, `json://host/path`, ...) or
    `notify: {urls: [...], command: "..."}`; the command runs in a shell with the message on its
    standard input and in ATTNSWEEP_TITLE / ATTNSWEEP_MESSAGE / ATTNSWEEP_EVENT."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    urls: list[str] = Field(default_factory=list, description="Apprise URLs")
    command: str | None = Field(None, description="a shell command run per message")

    @model_validator(mode="before")
    @classmethod
    def _list_or_mapping(cls, v: object) -> object:
        if isinstance(v, str):
            return {"urls": [v]}
        return {"urls": v} if isinstance(v, list) else v

    @model_validator(mode="after")
    def _urls(self) -> NotifySettings:
        if self.urls:
            import apprise  # only for a study that notifies

            for url in self.urls:
                if apprise.Apprise.instantiate(url) is None:  # Apprise's own parser: schema and fields
                    raise ValueError(f"urls: not a URL Apprise can send to: {url!r}")
        if not self.urls and not self.command:
            raise ValueError("name Apprise URLs or a command")
        return self
