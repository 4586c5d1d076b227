"""Entry point: ``python -m tests.kube.localkube up|down|status|build``."""

import sys

from .cli import main

sys.exit(main())
