"""Claims you can check: each paper's claim, the runs that test it, the measured number and a
verdict (ledger.py: what a claim is; catalogue/: the claims, by topic; runner.py: running and
judging them; report.py: the tables). The command is `toy-quanta-claims` (cli/claims.py)."""
