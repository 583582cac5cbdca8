"""``python -m molmo_nb_utils.tiny [FOLDER] [--segmenter] [--overwrite] [--seed N]``"""

import sys

from molmo_nb_utils.tiny.cli import main

sys.exit(main())
