"""lightd: the daemon that owns a game-server host's pool of network ports."""

__version__ = "0.1.0"
