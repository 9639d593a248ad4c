"""The `twistd mirrorproxy` plugin: a ServiceMaker and nothing else."""

from twisted.application.service import ServiceMaker

mirrorproxy = ServiceMaker(
    "mirrorproxy",
    "mirrorproxy.server.tap",
    "A Docker Hub pull-through cache (registry mirror).",
    "mirrorproxy",
)
