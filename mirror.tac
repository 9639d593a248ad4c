# Run with: twistd -ny mirror.tac
# The same service as `twistd mirrorproxy`, configured by the TOML file that
# MIRRORPROXY_CONFIG names (or the defaults when it is unset).
import os

from twisted.application.service import Application
from twisted.python.usage import UsageError

from mirrorproxy.server.tap import Options, makeService, usage_exit

options = Options()
config = os.environ.get("MIRRORPROXY_CONFIG")
try:
    options.parseOptions(["--config", config] if config else [])
except UsageError as e:
    # One line and exit status 2, as `twistd mirrorproxy` says it, not
    # twistd's "Failed to load application" with a traceback.
    usage_exit(e)
application = Application("mirrorproxy")
makeService(options).setServiceParent(application)
