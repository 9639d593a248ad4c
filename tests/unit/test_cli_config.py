"""``--config FILE``: the admin command reads the service's own config file."""

from __future__ import annotations

import re
from pathlib import Path

from mirrorproxy.configfile import TOP_LEVEL

UNIT = Path(__file__).parents[2] / "contrib" / "systemd" / "mirrorproxy.service"


def test_the_systemd_units_comments_spell_settings_as_the_config_file_does() -> None:
    comments = "\n".join(line for line in UNIT.read_text().splitlines() if line.startswith("#"))

    named = set(re.findall(r"(?<![\w-])([a-z][a-z_-]*) = ", comments))

    assert named and named <= set(TOP_LEVEL)
    for key in TOP_LEVEL:
        assert key.replace("-", "_") not in comments.replace(key, "")
