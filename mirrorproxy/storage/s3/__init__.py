"""The cache in an S3-compatible bucket: `store.S3Store`, from an
`location.S3Location` (``s3://BUCKET/PREFIX``) and an `location.S3Endpoint`."""
