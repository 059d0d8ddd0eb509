"""Caravanserai: a small container orchestrator built on a watch/informer framework."""

__version__ = "0.1.0"
