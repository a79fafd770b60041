#!/usr/bin/env python
"""`python scripts/summary.py ...` = `jaxcnn summary ...` (kept for the tutorials' habit)."""

import sys

from jaxcnn.cli.summary import main

if __name__ == "__main__":
    sys.exit(main())
