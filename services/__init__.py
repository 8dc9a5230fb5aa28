"""Hub-managed services of kdash-hub: the launcher and the culler."""
