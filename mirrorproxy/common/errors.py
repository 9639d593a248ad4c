"""Errors every layer may raise about the mirror's own configuration."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting that cannot work, with a message meant for the operator."""
