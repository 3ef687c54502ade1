"""``python -m ppl_gmm``: the command line (``ppl_gmm.app.cli``)."""

from .app.cli import main

raise SystemExit(main())
