"""`python -m gateway.cli`: how `clarion up` and `clarion ws --processes N` start their children."""

import sys

from gateway.cli import main

sys.exit(main())
