"""`python -m jaxcnn ...` = the `jaxcnn` command."""

import sys

from jaxcnn.cli import main

sys.exit(main())
