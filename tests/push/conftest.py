"""Fixtures of the Beams push tests; they live in beams_harness.py, which the tests import from
(``from conftest import`` would be ambiguous with several conftest.py files in the suite)."""

from beams_harness import *  # noqa: F403
from beams_harness import _no_proxy  # noqa: F401
