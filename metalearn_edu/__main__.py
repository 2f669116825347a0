"""``python -m metalearn_edu`` runs the ``metalearn-edu`` command line."""

from metalearn_edu.cli import main

raise SystemExit(main())
