#!/usr/bin/env python
"""`python scripts/train.py --arch vgg16 --data catdog` = `jaxcnn train ...` (kept for the tutorials' habit)."""

import sys

from jaxcnn.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
