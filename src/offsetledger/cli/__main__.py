"""``python -m offsetledger.cli``."""

import sys

from offsetledger.cli import main

sys.exit(main())
