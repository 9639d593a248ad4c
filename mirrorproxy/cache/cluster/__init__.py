"""A node of a cluster: several mirrors sharing one bucket, coordinated
through Redis.

- `node.ClusterNode`: what this node shares with the others (the bucket,
  the fill claims, the peers), and its counts;
- `origin.ClusterOrigin`: where one fill's bytes come from: the bucket if
  it holds the blob, else the node already fetching it, else upstream under
  this node's claim;
- `peers`: following another node's fill over HTTP;
- `store.TieredStore`: the local cache directory as a first tier, with
  manifests in the bucket and tag records in Redis as well.

Whatever the origin, a fill verifies the bytes against their digest before
any client sees a clean end, so a peer or a bucket is trusted no more than
upstream is.
"""
