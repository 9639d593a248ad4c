"""The registry's vocabulary: repository names, tags and digests, manifest
media types, what a manifest and a tag list must look like, and what a
manifest refers to.  Pure functions and values; used by every layer."""
