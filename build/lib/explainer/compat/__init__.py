"""Adapters to what the project needs from its dependencies beyond their public APIs (one place to fix on upgrade)."""
