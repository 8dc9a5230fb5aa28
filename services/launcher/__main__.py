"""`python -m kdash_hub.services.launcher` runs the service (what the hub starts)."""

from .app import main

main()
