"""What the tests share: small stores and heads, the cohort's files, child processes and their harnesses.

Importable as ``helpers`` (``from helpers import synth``): pytest puts the
tests folder on the import path (``pythonpath`` in pyproject.toml), and a
child process a test starts gets it on ``PYTHONPATH`` (:mod:`helpers.children`).
Test modules import only from here and from conftest fixtures, never from
one another.
"""
