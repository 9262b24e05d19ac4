"""normlab.engine: what both pipelines share — a run's lifecycle (``fit``), the training loop
(``trainer``: a step plus ``hooks``; ``hooks.ProgressEvent`` for progress callbacks), the one
``metrics.jsonl`` reader (``metrics``), the checkpoint schema and checksummed training state
(``checkpoint``), atomic file I/O (``io``), image decoding (``images``), devices and the
mixed-precision policy (``devices``), torchrun support (``distributed``) and the benchmark
harness (``bench``). Imports ``norms`` only; importing this package imports nothing heavy."""
