"""ccgate's benchmarks: each module is a script, run from the repository root.

    python -m bench.<name> [--quick]

Shared by the scripts:

* :mod:`bench.report` -- figures and their printing (percentiles, median/p90/min,
  ratios, tables, the environment lines);
* :mod:`bench.serve` -- server subprocesses (a free port, the benchmark's base
  environment, :class:`~bench.serve.ServerProcess`, :class:`~bench.serve.Gateway`);
* :mod:`bench.procs` -- what ``/proc`` says (CPU time, memory, the CLI version) and the
  final scan for processes a benchmark left behind;
* :mod:`bench.instant_app` -- ccgate's real app on :class:`ccgate.testing.ScriptedRunner`,
  a ``uvicorn --factory`` target.

Every script prints figures and never asserts on them; ``--quick`` runs it with tiny
counts, as a smoke test (``tests/bench``).
"""
