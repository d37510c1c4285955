"""Settings and entry-point plumbing shared by every process. A leaf: imports nothing of this project."""
