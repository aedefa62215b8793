"""Static sparse training, the control: a random mask at initialization that never changes."""

from __future__ import annotations

from ..registry import METHODS
from .configs import Static
from .rule import Rule


@METHODS.implements(Static)
class StaticRule(Rule):
    """The base rule as is: random masks by the config's distribution, never updated."""
