"""Offline evaluation: the prequential pass over a recorded log (the core in process, beside baselines), the
same log through real workers, the scoreboard and its text and HTML reports."""
