"""The engine's entry: a Job in, a Verdict out (`pipeline.validate`), and the batches of
several builder branches validated together (`batch`).

The pipeline runs the stages in order — sandbox, build, migrating, observing, checking,
judging, reporting — and may import every engine package; never an edge (app, github,
actions, cli).
"""
