"""The one error hierarchy of elemta_smtp: every error a user can see derives
from ``ElemtaError`` and says what is wrong and what to do."""


class ElemtaError(Exception):
    """Base of every error elemta_smtp raises on purpose."""
