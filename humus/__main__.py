"""`python -m humus` is the `humus` command."""

import sys

from humus.cli import main

sys.exit(main())
