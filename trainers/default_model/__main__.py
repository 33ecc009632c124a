"""`python -m trainers.default_model`: train (when missing) and show the default model."""
import sys

from trainers.default_model.commands import main

sys.exit(main())
