"""Evaluating a fleet's recordings: many bags in, per-bag outputs, one aggregated report (issue 26).

`inputs` (which bags, with which topics), `keys` (what a finished bag is keyed by, to resume), `job` (one bag
evaluated in whatever process runs it, the model loaded once per process), `schedule` (serial, local
worker processes, or Ray tasks), `summary` (the aggregated report), `run` (the whole run).
"""
