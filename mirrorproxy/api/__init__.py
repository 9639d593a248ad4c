"""The registry HTTP API v2, read side: the /v2/ resource tree, routing to
an upstream's cache, client access control, registry JSON errors and Range
parsing.  Speaks HTTP; never calls upstream and never touches files."""
