"""``python -m nmelab`` runs the command line."""

from nmelab.cli import main

raise SystemExit(main())
