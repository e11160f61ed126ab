"""SLURM backend for sweeps: renders sbatch scripts from templates and calls ``sbatch``.

Nothing here knows about workloads: a task script runs one plain ``llmbench``
command line, so any task can be re-run by hand from its log.
"""
