"""Copy detection, the whole `dupes` pipeline: candidates, verification, groups, orchestration
(dupes.py), and the query's copy check (rerank.py)."""
