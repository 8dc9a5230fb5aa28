"""`python -m kdash_hub.services.culler [--config=FILE] [--dry-run] [--once]`."""

import sys

from .app import main

sys.exit(main())
