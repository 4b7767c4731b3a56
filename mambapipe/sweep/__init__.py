"""Sweeps: one child process per Hydra multirun job, GPU leases, and the sweep summary
(summary.md / summary.csv / PNG plots) built from the jobs' run directories."""
