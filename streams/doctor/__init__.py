"""`convstream doctor`: account preflight checks and upload diagnostics.

Each destination has a module of checks that returns :class:`~streams.doctor.checks.Check`
rows; :mod:`streams.doctor.report` prints them as one table. The checks only read: nothing
here creates, changes or uploads anything.
"""
