"""Where cached content lives: the only code that knows the cache's layout.
Today a filesystem; the cache layer speaks to it through its interface."""
