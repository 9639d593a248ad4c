"""Issue 6's workloads, one module each. Each has ``run(bench, results)``,
which measures every system and adds its figures, and ``targets(results)``,
which checks the issue's targets against them."""
