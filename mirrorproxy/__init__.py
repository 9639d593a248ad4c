"""mirrorproxy: a Docker Hub pull-through cache on Twisted."""
