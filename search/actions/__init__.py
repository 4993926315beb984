"""Acting on a user's files: the dupes plan (plan.py), the journal every action writes and
`undo` reads (journal.py), the platform trash (trash.py), orientation fixes (orient_fix.py)."""
