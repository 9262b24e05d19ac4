"""normlab.engine: what both pipelines share — the training loop (``trainer``), the checkpoint
schema (``checkpoint``), atomic file I/O (``io``), image decoding (``images``), devices and the
mixed-precision policy (``devices``), torchrun support (``distributed``) and the benchmark
harness (``bench``). Imports ``norms`` only; importing this package imports nothing heavy."""
