"""Which copy of a duplicate group to keep: the policies (policy.py), the `best` tournament
(best.py) and what it looks at in each file (look.py)."""
