"""Adapters to the outside world: storage, firewall, container engine."""
