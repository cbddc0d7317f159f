"""Use cases of lightd, written against small Protocols for what they need."""
