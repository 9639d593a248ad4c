"""The ``mirrorproxy`` admin command: stats, ls, verify, gc, purge and
prefetch over a cache directory, the service running or not.  Nothing in
the server imports it."""
