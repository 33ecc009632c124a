"""`python -m xmodal_core.cli`: the `xmodal` command."""
import sys

from xmodal_core.cli import main

sys.exit(main())
