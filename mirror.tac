# Run with: twistd -ny mirror.tac
# The same service as `twistd mirrorproxy`, configured by the TOML file that
# MIRRORPROXY_CONFIG names (or the defaults when it is unset).
import os

from twisted.application.service import Application

from mirrorproxy.tap import Options, makeService

options = Options()
config = os.environ.get("MIRRORPROXY_CONFIG")
options.parseOptions(["--config", config] if config else [])
application = Application("mirrorproxy")
makeService(options).setServiceParent(application)
