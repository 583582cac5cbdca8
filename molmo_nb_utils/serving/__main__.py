"""``python -m molmo_nb_utils.serving`` (what ``make serve`` runs): see ``launch.main``."""

import sys

from molmo_nb_utils.serving.launch import main

if __name__ == "__main__":
    sys.exit(main())
