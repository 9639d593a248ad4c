"""The cache of one upstream registry: blobs (served, joined, or filled from
upstream once and verified), manifests and tags (revalidated within their
TTL), tag lists, what 404s upstream gave, and eviction.  Calls upstream and
storage; knows nothing of HTTP requests."""
