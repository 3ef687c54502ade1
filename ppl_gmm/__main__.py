"""``python -m ppl_gmm ...`` runs the ``ppl-gmm`` command line."""
from .cli import main

raise SystemExit(main())
