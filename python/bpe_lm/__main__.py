import sys

from bpe_lm.cli import main

sys.exit(main())
