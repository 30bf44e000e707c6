"""Deterministic simulation testing of your own application."""

from offsetledger.testing._observer import HistoryObserver, observer

__all__ = ["HistoryObserver", "observer"]
