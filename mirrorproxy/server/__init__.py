"""The running service: `twistd mirrorproxy`'s options and config file, the
HTTP channel and site (connection limits, access log), graceful stop, logs,
metrics and readiness.  Wires the layers below together."""
