"""The sync engine and what it stands on: lease, page writes, prefetch, tracking, retention."""
