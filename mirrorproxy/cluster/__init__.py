"""Several mirror nodes acting as one cache, coordinated through Redis:
who fills a digest (claims), tag records shared by the cluster (one
revalidation per tag per TTL), purges and evictions told to every node
(pub/sub), and what happens when Redis is away (each node coordinates its
own requests only, and says so).

The cache calls these; nothing here knows about requests, files or
upstream.  `coordination.Coordination` builds one node's set from a
``redis://`` URL.
"""
