"""`python -m flowstage` is the `flowstage` command."""

import sys

from flowstage.server.cli import main

sys.exit(main())
