# Run with: twistd -ny mirror.tac
# The same service as `twistd mirrorproxy` with its defaults; edit the
# arguments below to change them.
from twisted.application.service import Application

from mirrorproxy.tap import Options, makeService

options = Options()
options.parseOptions([])
application = Application("mirrorproxy")
makeService(options).setServiceParent(application)
