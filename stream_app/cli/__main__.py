"""`python -m stream_app.cli ...`, as `stream-app ...` (how workers and tests spawn it)."""

import sys

from .main import main

sys.exit(main())
