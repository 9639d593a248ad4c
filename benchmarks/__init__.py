"""The side-by-side benchmark of issue 6: mirrorproxy against the reference
registry in proxy mode and against nginx as a caching proxy.

``python -m benchmarks.run [--smoke] [--out FILE]`` starts everything on
127.0.0.1, runs workloads 1-6 against every system, prints one table, and
writes the results as JSON and the ratios as a PNG chart. See BENCHMARKS.rst.

It reuses the integration harness (``tests/integration/harness``) for the
processes it has in common with the tests: process handling, the upstream's
access-log reading, image building and pushing with skopeo, the mirror as
``twistd -n mirrorproxy``.
"""
