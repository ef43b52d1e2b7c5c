"""Coverage-guided fuzzing of everything that parses bytes from strangers (atheris).

``python -m tests.fuzz TARGET --seconds N`` (or ``--runs N``) fuzzes one target of
:mod:`tests.fuzz.targets`, starting from the committed seeds in
``tests/fuzz/corpus/TARGET`` (RFC 4475, our vectors, captures from real peers);
what it learns goes to a scratch directory, a crashing input to
``tests/fuzz/crashes/`` (not committed: once fixed, it moves to
``tests/fuzz/regressions/TARGET`` under a name saying what it broke).
``python -m tests.fuzz --seed`` rebuilds the seeds.
"""
