"""`python -m mlsysops.far_edge`: the far-edge agent on its own (slixmpp and the standard library)."""

import sys

from mlsysops.far_edge.cli import main

sys.exit(main())
