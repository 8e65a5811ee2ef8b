import sys

from dino_boc.cli import main

sys.exit(main())
